"""`tritonize convert chatbot`: an FAQ, a served embedder and a served generator -> the chatbot models.

The FAQ is read and checked (`faq.py`), its questions embedded once with the embedder's files and the
code it is served with (`embed.py`), the vectors stored with the FAQ, and an index built: exact cosine in
numpy by default, an HNSW graph (FAISS) for large FAQs. The conversion sequence (reuse of a run with the
same FAQ, options, embedder and generator; the manifest) is `base.Conversion`'s.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tritonize.contract.chat import GENERATOR_LIMITS
from tritonize.contract.files import read_manifest, write_manifest as write_manifest_file
from tritonize.contract.model_config import config_parameters, read_config
from tritonize.converters.base import Conversion, manifest
from tritonize.converters.chat.embed import PipelineEmbedder
from tritonize.converters.chat.faq import FaqEntry, read_faq
from tritonize.converters.chat.repository import ChatbotSpec, write_chatbot
from tritonize.runtime.chat.prompt import check_template

# FAQ entries, then the conversation's earlier turns, then the question (tritonize.runtime.chat.prompt fills them).
DEFAULT_TEMPLATE = "{context}{history}Question: {question}\nAnswer:"
HNSW_NEIGHBOURS = 32  # graph degree (M): recall vs memory
HNSW_EF_CONSTRUCTION = 80
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ChatbotReport:
    name: str
    stream_name: str
    entries: int
    embedder: str
    generator: str
    index: str
    threshold: float
    top_k: int
    repository: str
    reused: bool = False
    embed_seconds: float = 0.0
    index_seconds: float = 0.0
    seconds: float = 0.0


def generator_settings(repository: Path, name: str) -> tuple[str, dict]:
    """The generator's family and limits, from its config.pbtxt (what it serves now, edits included)."""
    path = repository / name / "config.pbtxt"
    manifest = read_manifest(repository, name)
    if not path.exists() or manifest is None:
        raise ValueError(f"generator {name!r} is not in {repository}; convert it first: tritonize convert gpt2|t5 --model CHECKPOINT --name {name}")
    params = config_parameters(read_config(path))
    if params.get("task") != "generation":
        raise ValueError(f"{name!r} is not a generator (task {params.get('task')!r}); the chatbot needs a GPT-2 or T5 generator")
    return params["family"], {k: int(params[k]) for k in GENERATOR_LIMITS if params.get(k, "") != ""}


def build_faiss(vectors: np.ndarray) -> bytes:
    try:
        import faiss
    except ImportError:
        raise RuntimeError("--index faiss needs faiss-cpu: pip install 'tritonize[chat]'") from None
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return faiss.serialize_index(index).tobytes()


def faq_lines(entries: list[FaqEntry]) -> str:
    return "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries)


def write_from_vectors(repository: Path, spec: ChatbotSpec, entries: list[FaqEntry], vectors: np.ndarray, template: str) -> float:
    """Both models with the FAQ, vectors, index, template and the generator's tokenizer; returns the index
    build time. The caller writes the manifest (`write_manifest`) last. `benchmarks/chat_bench.py` calls
    this with synthetic vectors for its 100,000-entry FAQ."""
    if vectors.shape[0] != len(entries) or vectors.ndim != 2:
        raise ValueError(f"{len(entries)} entries but vectors of shape {list(vectors.shape)}")
    buffer = io.BytesIO()
    np.save(buffer, vectors.astype(np.float32))
    files: dict[str, Path | str | bytes] = {
        "faq.jsonl": faq_lines(entries),
        "embeddings.npy": buffer.getvalue(),
        "prompt.txt": check_template(template),
        "generator_tokenizer.json": repository / spec.generator / "1" / "tokenizer.json",
    }
    started = time.monotonic()
    if spec.index == "faiss":
        files["index.faiss"] = build_faiss(vectors)
    index_seconds = time.monotonic() - started
    stale = repository / spec.name / "1" / "index.faiss"
    if spec.index == "exact" and stale.exists():
        stale.unlink()
    write_chatbot(repository, spec, files)
    return index_seconds


def write_manifest(repository: Path, spec: ChatbotSpec, key: str, report: ChatbotReport) -> None:
    """Written last: a manifest marks a complete write (and lets a second run reuse it)."""
    write_manifest_file(repository, spec.name, manifest(key, report, chatbot=asdict(spec)))


class ChatbotConversion(Conversion[ChatbotReport]):
    """The source is the FAQ; the export embeds its questions with the served embedder's code (no parity:
    the vectors are the served ones by construction, and the tests compare them)."""

    family, report_type, tolerance = "chat", ChatbotReport, 0.0
    reuse_reason = "same FAQ, options, embedder and generator"

    def __init__(self, faq: str | Path, embedder: str, generator: str, repository: Path, name: str | None, threshold: float, top_k: int,
                 prompt_template: str | Path | None, index: str, force: bool, log: Callable[[str], None]):
        name = name or f"{Path(faq).stem}-bot"
        if not MODEL_NAME.match(name):
            raise ValueError(f"name {name!r}: use letters, digits, '-', '_' and '.' only")
        super().__init__(name, str(faq), repository, force, log)
        self.entries = read_faq(faq)
        self.template = check_template(Path(prompt_template).read_text(encoding="utf-8") if prompt_template else DEFAULT_TEMPLATE)
        family, limits = generator_settings(self.repository, generator)
        self.spec = ChatbotSpec(name, embedder, generator, family, limits, index, threshold, top_k)

    def options(self) -> dict:
        r, spec = self.repository, self.spec
        return {"faq": hashlib.sha256(faq_lines(self.entries).encode()).hexdigest(), "template": self.template, "spec": asdict(spec),
                "embedder_key": (read_manifest(r, spec.embedder) or {}).get("key"),
                "generator_key": (read_manifest(r, spec.generator) or {}).get("key")}

    def export(self, tmp: Path) -> None:
        model = PipelineEmbedder(self.repository, self.spec.embedder)
        t0 = time.monotonic()
        self.vectors = model.embed([e.question for e in self.entries])
        self.embed_seconds = time.monotonic() - t0
        self.log(f"{self.name}: embedded {len(self.entries)} FAQ questions with {self.spec.embedder}'s served code in {self.embed_seconds:.1f} s")

    def parity(self) -> None:
        """Nothing to compare: the vectors come from the served code itself."""

    def report(self) -> ChatbotReport:
        spec = self.spec
        return ChatbotReport(self.name, spec.stream_name, len(self.entries), spec.embedder, spec.generator, spec.index, spec.threshold,
                             spec.top_k, str(self.repository), embed_seconds=round(self.embed_seconds, 2))

    def write(self, report: ChatbotReport) -> dict:
        report.index_seconds = round(write_from_vectors(self.repository, self.spec, self.entries, self.vectors, self.template), 2)
        report.seconds = self.seconds()
        return {"chatbot": asdict(self.spec)}

    def written(self, report: ChatbotReport) -> str:
        return f"{self.name}: wrote {self.repository / self.name} and {self.spec.stream_name} ({self.spec.index} index) in {report.seconds:.0f} s"


def convert_chatbot(
    faq: str | Path,
    embedder: str,
    generator: str,
    repository: Path = Path("model_repository"),
    name: str | None = None,
    threshold: float = 0.5,
    top_k: int = 3,
    prompt_template: str | Path | None = None,
    index: str = "exact",
    force: bool = False,
    log: Callable[[str], None] = print,
) -> ChatbotReport:
    return ChatbotConversion(faq, embedder, generator, Path(repository), name, threshold, top_k, prompt_template, index, force, log).run()
