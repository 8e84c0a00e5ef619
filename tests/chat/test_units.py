"""The chatbot's parts without a server: FAQ files and their errors, the conversion's checks and reuse, the
stored vectors against the embedder's, routing, prompts that fit, the indexes, configs that round-trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from google.protobuf import text_format

from tritonize.converters.chat.convert import check_template, convert_chatbot
from tritonize.converters.chat.faq import MAX_ANSWER_CHARS, MAX_ROW_BYTES, FaqEntry, FaqError, demo_faq, read_faq
from tritonize.converters.chat.repository import ChatbotSpec, chatbot_config
from tritonize.converters.repository import mc, render
from tritonize.runtime.chat.index import ExactIndex, Faq, FaissIndex
from tritonize.runtime.chat.prompt import Budget, Prompter
from tritonize.runtime.chat.request import ChatSettings, make_request, parse_history, route
from tritonize.runtime.generation.params import Limits
from tritonize.runtime.triton import InputError
from tests.conftest import CHATBOT, CLASSIFIER, EMBEDDER
from tests.tiny_generators import GPT2

LIMITS = Limits(max_context=512, max_new_tokens=400)
LONG_ROW = json.dumps({"id": "a", "question": "Q?", "answer": "A" * MAX_ROW_BYTES})
SETTINGS = ChatSettings()


# -- FAQ files --------------------------------------------------------------------------------------
def _write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.unit
def test_demo_faq_reads_and_csv_reads_the_same(tmp_path):
    entries = read_faq(demo_faq())
    assert 45 <= len(entries) <= 60 and len({e.id for e in entries}) == len(entries)
    import csv

    with open(tmp_path / "faq.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "category"])  # extra columns are ignored
        for e in entries:
            w.writerow([e.id, e.question, e.answer, "x"])
    assert read_faq(tmp_path / "faq.csv") == entries


BAD_FILES = [
    ("faq.csv", "id,question\n1,Q?\n", "missing column(s) answer; the header has id, question"),
    ("faq.jsonl", '{"id": "a", "question": "Q?"}\n', "line 1: missing field(s) answer"),
    ("faq.jsonl", '{"id": "a", "question": "Q?", "answer": "A"}\n{"id": "a", "question": "Q2?", "answer": "B"}\n',
     "line 2: duplicate id 'a' (first on line 1)"),
    ("faq.csv", 'id,question,answer\nx,Q?,A\ny,Q2?,"  "\n', "line 3: answer is empty"),
    ("faq.jsonl", LONG_ROW + "\n", f"line 1: the row is {len(LONG_ROW):,} bytes; the limit is {MAX_ROW_BYTES:,}"),
    ("faq.csv", "id,question,answer\n" + "a,Q?," + "A" * (MAX_ANSWER_CHARS + 1) + "\n",
     f"line 2: answer is {MAX_ANSWER_CHARS + 1:,} characters; the limit is {MAX_ANSWER_CHARS:,}"),
    ("faq.csv", b"id,question,answer\na,Caf\xe9?,A\n", "not valid UTF-8 (byte 0xe9 on line 2)"),
    ("faq.jsonl", '{"id": "generated", "question": "Q?", "answer": "A"}\n', "id 'generated' is reserved"),
    ("faq.jsonl", "[1, 2]\n", "line 1: expected a JSON object"),
    ("faq.jsonl", "{oops\n", "line 1: not a JSON object"),
    ("faq.csv", "id,question,answer\n", "no entries"),
    ("faq.txt", "whatever", "unknown FAQ format '.txt'"),
    ("faq.csv", "id,question,answer\na,Q?,A,extra\n", "line 2: more cells than the header's 3 columns"),
]


@pytest.mark.unit
@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[m.split(";")[0][:40] for _, _, m in BAD_FILES])
def test_bad_faq_files_name_the_line_field_and_limit(tmp_path, name, content, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(FaqError) as e:
        read_faq(path)
    assert message in str(e.value) and (str(path) in str(e.value) or name == "faq.txt")


@pytest.mark.unit
def test_faq_entry_validates():
    with pytest.raises(FaqError, match="question is empty"):
        FaqEntry("a", "", "A")
    with pytest.raises(FaqError, match="id must be a string"):
        FaqEntry(3, "Q", "A")


# -- conversion -------------------------------------------------------------------------------------
def test_conversion_errors_name_what_to_do(built, tmp_path):
    repo = built["repository"]
    faq = demo_faq()
    with pytest.raises(ValueError, match=r"generator 'nope' is not in .*convert it first: tritonize convert gpt2\|t5"):
        convert_chatbot(faq, EMBEDDER, "nope", repo, "x-bot", log=lambda m: None)
    with pytest.raises(ValueError, match="embedder 'nope' is not an encoder pipeline"):
        convert_chatbot(faq, "nope", GPT2, repo, "x-bot", log=lambda m: None)
    with pytest.raises(ValueError, match="is a classification pipeline; the chatbot needs --task embedding"):
        convert_chatbot(faq, CLASSIFIER, GPT2, repo, "x-bot", log=lambda m: None)
    with pytest.raises(ValueError, match="'minilm' is not a generator"):
        convert_chatbot(faq, EMBEDDER, EMBEDDER, repo, "x-bot", log=lambda m: None)
    with pytest.raises(ValueError, match=r"threshold must be a cosine score in \[-1, 1\], got 2"):
        convert_chatbot(faq, EMBEDDER, GPT2, repo, "x-bot", threshold=2, log=lambda m: None)
    template = tmp_path / "t.txt"
    template.write_text("{context}Q: {query}")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \{query\}"):
        convert_chatbot(faq, EMBEDDER, GPT2, repo, "x-bot", prompt_template=template, log=lambda m: None)
    assert not (repo / "x-bot").exists()


@pytest.mark.unit
def test_templates():
    assert check_template("Q: {question}\nA:") == "Q: {question}\nA:"
    assert check_template("{history}Q: {question}\nA:")
    for bad, message in (("{context}", "{question} is missing"), ("{question} {", "write literal braces"),
                         ("{question}{turns}", r"unknown field\(s\) \{turns\}; allowed: \{question\}, \{context\}, \{history\}")):
        with pytest.raises(ValueError, match=message):
            check_template(bad)


def test_stored_vectors_are_the_embedders_and_a_second_conversion_is_reused(built, grpc_client):
    repo = built["repository"]
    folder = repo / CHATBOT / "1"
    stored = Faq.load(folder)
    served = grpc_client.embed(stored.questions, model=EMBEDDER)
    np.testing.assert_allclose(stored.vectors, served, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(stored.vectors, axis=1), 1.0, atol=1e-5)
    logs: list[str] = []
    report = convert_chatbot(demo_faq(), EMBEDDER, GPT2, repo, CHATBOT, threshold=0.5, top_k=3, log=logs.append)
    assert report.reused and "reusing" in logs[0] and report.entries == len(stored.ids)


@pytest.mark.unit
def test_config_round_trips_through_protobuf_text():
    spec = ChatbotSpec("bot", "emb", "gen", "decoder", {"max_context": 512, "max_new_tokens": 400})
    for streaming in (False, True):
        config = chatbot_config(spec, streaming)
        parsed = text_format.Parse(render(config), mc.ModelConfig())
        assert parsed == config
        assert parsed.model_transaction_policy.decoupled is streaming
        assert [i.name for i in parsed.input if i.optional] == ["MODE", "THRESHOLD", "TOP_K", "HISTORY"]
        assert json.loads(parsed.parameters["tritonize_calls"].string_value) == ["emb", "gen"]
    with pytest.raises(ValueError, match="top_k must be between 1 and 20, got 0"):
        ChatbotSpec("bot", "emb", "gen", "decoder", {"max_context": 1, "max_new_tokens": 1}, top_k=0)
    with pytest.raises(ValueError, match="must differ"):
        ChatbotSpec("gen", "emb", "gen", "decoder", {"max_context": 1, "max_new_tokens": 1})


# -- routing and requests ---------------------------------------------------------------------------
def _request(mode="auto", threshold=None, top_k=None, **gen):
    return make_request("How?", mode, threshold, top_k, gen, SETTINGS, LIMITS)


@pytest.mark.unit
def test_route_by_mode_and_threshold():
    rows, scores = [4, 1, 7], [0.62, 0.5, 0.1]
    assert route(_request(threshold=0.62), rows, scores).kind == "faq"
    assert route(_request(threshold=0.62), rows, scores).row == 4
    assert route(_request(threshold=math.nextafter(0.62, 1)), rows, scores).context == (4, 1, 7)
    assert route(_request("retrieval", 0.9), rows, scores).kind == "no-match"
    assert route(_request("generative", -1.0), rows, scores).context == ()


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "x"}, "MODE must be one of"),
    ({"threshold": float("nan")}, "THRESHOLD must be a cosine score in [-1, 1]"),
    ({"top_k": 21}, "TOP_K must be between 1 and 20, got 21"),
    ({"max_new_tokens": "many"}, "max_new_tokens must be an integer, got 'many'"),
    ({"stream": False}, "set by the chatbot"),
])
@pytest.mark.unit
def test_request_errors(kwargs, message):
    with pytest.raises(InputError) as e:
        _request(**kwargs)
    assert message in str(e.value)


@pytest.mark.unit
def test_settings_validate():
    with pytest.raises(ValueError, match="threshold must be in"):
        ChatSettings(threshold=1.5)
    assert ChatSettings.from_params({"threshold": "0.25", "top_k": "5"}) == ChatSettings(0.25, 5)


# -- prompts ----------------------------------------------------------------------------------------
@pytest.mark.unit
def test_prompt_drops_the_worst_entries_until_it_fits():
    words = lambda text: len(text.split())  # noqa: E731 (a stand-in tokenizer: one token per word)
    entries = [("q1 " * 10, "a1 " * 10), ("q2 " * 10, "a2 " * 10), ("q3 " * 10, "a3 " * 10)]
    prompter = Prompter("{context}Question: {question}\nAnswer:", words, Budget(max_context=100, default_max_new_tokens=20, decoder_only=True))
    prompt, used, tokens = prompter.build("why?", entries, max_new_tokens=None)  # room: 80 tokens, each entry ~24
    assert used == 3 and tokens <= 80 and prompt.index("q1") < prompt.index("q2") < prompt.index("q3")
    prompt, used, tokens = prompter.build("why?", entries, max_new_tokens=40)  # room: 60
    assert used == 2 and "q3" not in prompt and tokens == words(prompt) <= 60
    assert prompter.build("why?", entries, max_new_tokens=99)[1] == 0
    assert prompter.render("why?", []) == "Question: why?\nAnswer:"


@pytest.mark.unit
def test_history_goes_in_after_the_entries_latest_turns_first():
    words = lambda text: len(text.split())  # noqa: E731
    budget = Budget(max_context=100, default_max_new_tokens=20, decoder_only=True)
    prompter = Prompter("{context}{history}Question: {question}\nAnswer:", words, budget)
    turns = [("user", "old " * 20), ("assistant", "reply " * 20), ("user", "recent " * 20), ("assistant", "last " * 20)]
    entries = [("q1 " * 10, "a1 " * 10)]
    assert prompter.render("why?", [], [("user", "hi"), ("assistant", "hello")]) == "Question: hi\nAnswer: hello\n\nQuestion: why?\nAnswer:"
    # Room 80: the question (4 words) and the entry (22) go in first, then the latest two turns (21 each), not a third.
    prompt, used, tokens = prompter.build("why?", entries, None, turns)
    assert used == 1 and tokens == words(prompt) <= 80
    assert "old" not in prompt and "reply" not in prompt and prompt.index("a1") < prompt.index("recent") < prompt.index("last")
    prompt, _, _ = prompter.build("why?", entries, 80, turns)  # room 20: the entry does not fit, nor does any turn
    assert prompt == "Question: why?\nAnswer:"
    # A template without {history} gets the turns in front of the whole prompt.
    bare = Prompter("Q: {question}\nA:", words, budget)
    assert bare.render("why?", [], [("user", "hi"), ("assistant", "hello")]) == "Question: hi\nAnswer: hello\n\nQ: why?\nA:"


@pytest.mark.unit
def test_history_is_checked_turn_by_turn():
    assert parse_history(None) == ()
    assert parse_history('[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]') == (("user", "hi"), ("assistant", "hello"))
    for raw, message in (("[{", "HISTORY is not JSON"), ('{"role": "user"}', "HISTORY must be a JSON list of turns, got dict"),
                         ('[{"role": "system", "content": "x"}]', r"HISTORY\[0\] must be"),
                         ('[{"role": "user", "content": "x"}, {"role": "user"}]', r"HISTORY\[1\] must be")):
        with pytest.raises(InputError, match=message):
            parse_history(raw)


# -- indexes ----------------------------------------------------------------------------------------
def _unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.unit
def test_exact_index_is_best_first_with_ties_in_file_order():
    vectors = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    rows, scores = ExactIndex(vectors).search(np.array([1, 0], dtype=np.float32), 3)
    assert rows == [0, 2, 3] and scores == pytest.approx([1, 1, 0.6])
    assert ExactIndex(vectors).search(np.array([0, 1], dtype=np.float32), 10)[0] == [1, 3, 0, 2]


def test_faiss_index_finds_what_exact_search_finds(tmp_path):
    from tritonize.converters.chat.convert import build_faiss

    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng, 5000), _unit(rng, 50)
    (tmp_path / "index.faiss").write_bytes(build_faiss(vectors))
    exact, hnsw = ExactIndex(vectors), FaissIndex(tmp_path / "index.faiss")
    recall = []
    for q in queries:
        e_rows, e_scores = exact.search(q, 5)
        h_rows, h_scores = hnsw.search(q, 5)
        recall.append(len(set(e_rows) & set(h_rows)) / 5)
        np.testing.assert_allclose(h_scores, vectors[h_rows] @ q, atol=1e-5)  # its scores are exact cosines
    assert np.mean(recall) >= 0.95, np.mean(recall)


@pytest.mark.unit
def test_in_flight_count_refuses_beyond_the_limit_and_waits_for_zero():
    import threading

    from tritonize.runtime.chat.chatbot import InFlight
    from tritonize.runtime.generation.params import Overloaded

    gate = InFlight(2)
    gate.enter()
    gate.enter()
    with pytest.raises(Overloaded, match="overloaded: 2 chat requests in flight \\(the limit is 2\\); retry later"):
        gate.enter()
    assert not gate.wait_idle(0.05)
    threading.Timer(0.1, gate.leave).start()
    threading.Timer(0.2, gate.leave).start()
    assert gate.wait_idle(5) and gate.count == 0


@pytest.mark.unit
def test_retired_iterators_are_released_only_after_a_barrier_that_travelled():
    import weakref

    from tritonize.runtime.chat.bls import Retired

    class Iterator:  # a stand-in for the stub's response iterator: only its lifetime matters here
        pass

    retired = Retired()
    first, second, third = Iterator(), Iterator(), Iterator()
    refs = [weakref.ref(x) for x in (first, second, third)]
    retired.settle(first, queue_barrier=lambda: True)  # the sender's cached "cancelled": nothing travelled
    del first
    assert refs[0]() is not None and len(retired) == 1
    seen_during_barrier = []
    retired.settle(second, queue_barrier=lambda: seen_during_barrier.append(len(retired)) or False)
    del second
    assert seen_during_barrier == [2], "held while the barrier travels"
    assert refs[0]() is None and refs[1]() is None and len(retired) == 0, "released: everything queued before the barrier"

    # One settled while another's barrier is on its way stays held: its clean-up may be queued after that barrier.
    def barrier_during_which_another_settles() -> bool:
        retired.settle(third_holder.pop(), queue_barrier=lambda: True)
        return False

    fourth = Iterator()
    fourth_ref = weakref.ref(fourth)
    third_holder = [third]
    del third
    retired.settle(fourth, queue_barrier=barrier_during_which_another_settles)
    del fourth
    assert fourth_ref() is None and refs[2]() is not None and len(retired) == 1
