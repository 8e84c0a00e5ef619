"""Every gateway route against every pipeline kind the test server serves, with the official `openai` SDK:
each combination `tritonize.families` lists answers, each other one is a 400 naming `model`. Then the FAQ
chatbot through completions and chat: the FAQ's answer for a matching question, a generated one
otherwise, one-shot and streamed alike, and 400s naming what it cannot honour."""

from __future__ import annotations

import io
import wave

import numpy as np
import openai
import pytest

from tritonize.client import ChatClient
from tritonize.families import AUDIO_SPEECH, CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, RERANK, served_kinds
from tests.chat.test_served import BY_ID, PARAPHRASES, UNRELATED
from tests.conftest import CHATBOT, CLASSIFIER, EMBEDDER, VOICE
from tests.tiny_generators import GPT2
from tests.tiny_rerankers import RERANKER

ROUTES = (EMBEDDINGS, COMPLETIONS, CHAT_COMPLETIONS, AUDIO_SPEECH, RERANK)
MODELS = {"embedding": EMBEDDER, "classification": CLASSIFIER, "generation": GPT2, "speech": VOICE, "chat": CHATBOT, "rerank": RERANKER}
# What the families list, written out: a change there shows up here.
LISTED = {EMBEDDINGS: {"embedding"}, COMPLETIONS: {"generation", "chat"}, CHAT_COMPLETIONS: {"generation", "chat"},
          AUDIO_SPEECH: {"speech"}, RERANK: {"rerank"}}
MATCHING = "What is tritonize?"  # an FAQ question, word for word
RERANK_DOCUMENTS = ["tritonize serves models", "a recipe for bread", "what is triton"]
MATRIX = [(route, kind) for route in ROUTES for kind in MODELS]


@pytest.fixture(scope="module")
def chat(server):
    with ChatClient(server.grpc_url, timeout_s=60) as c:
        yield c


def call(oai: openai.OpenAI, route: str, model: str):
    """One request on `route`, whose answer is checked by `check`."""
    if route == EMBEDDINGS:
        return oai.embeddings.create(model=model, input=MATCHING, encoding_format="float")
    if route == COMPLETIONS:
        return oai.completions.create(model=model, prompt=MATCHING, max_tokens=8, temperature=0)
    if route == CHAT_COMPLETIONS:
        return oai.chat.completions.create(model=model, messages=[{"role": "user", "content": MATCHING}], max_tokens=8, temperature=0)
    if route == RERANK:  # no SDK method: the SDK's own request path, so errors are its typed exceptions too
        return oai.post("/rerank", body={"model": model, "query": MATCHING, "documents": RERANK_DOCUMENTS}, cast_to=object)
    return oai.audio.speech.create(model=model, voice=model, input="Hello there.", response_format="wav").read()


def check(route: str, kind: str, got) -> None:
    faq_answer = BY_ID["what-is"].answer
    if route == EMBEDDINGS:
        vector = np.array(got.data[0].embedding)
        assert len(got.data) == 1 and vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert got.usage.prompt_tokens > 0
    elif route == RERANK:
        scores = [r["relevance_score"] for r in got["results"]]
        assert sorted(r["index"] for r in got["results"]) == list(range(len(RERANK_DOCUMENTS))) and scores == sorted(scores, reverse=True)
        assert all(0 < s < 1 for s in scores) and [r["document"]["text"] for r in got["results"]] == [RERANK_DOCUMENTS[r["index"]] for r in got["results"]]
        assert got["model"] == RERANKER and got["usage"]["total_tokens"] > 0
    elif route == AUDIO_SPEECH:
        with wave.open(io.BytesIO(got)) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert samples.size > 1000 and np.abs(samples).max() > 0
    else:
        choice = got.choices[0]
        content = choice.text if route == COMPLETIONS else choice.message.content
        assert got.object == ("text_completion" if route == COMPLETIONS else "chat.completion")
        assert isinstance(content, str) and choice.finish_reason in ("stop", "length")
        if kind == "chat":  # the FAQ's answer, whole
            assert (content, choice.finish_reason, got.usage) == (faq_answer, "stop", None)
        else:
            assert 1 <= got.usage.completion_tokens <= 8 and got.usage.prompt_tokens > 0


def test_the_matrix_is_what_the_families_list_and_models_lists_each_kind(oai):
    assert {route: set(served_kinds(route)) for route in ROUTES} == LISTED
    assert set().union(*LISTED.values()) | {"classification"} == set(MODELS)  # every kind served, one unlisted anywhere
    cards = {m.id: m for m in oai.models.list().data}
    assert {kind: cards[name].kind for kind, name in MODELS.items()} == {kind: kind for kind in MODELS}
    assert cards[CHATBOT].chat_template is None  # a chatbot renders no chat template


@pytest.mark.parametrize("route, kind", MATRIX, ids=[f"{r}-{k}" for r, k in MATRIX])
def test_each_route_answers_the_kinds_listed_and_refuses_the_others_naming_model(oai, route, kind):
    model = MODELS[kind]
    if kind in served_kinds(route):
        check(route, kind, call(oai, route, model))
        return
    with pytest.raises(openai.BadRequestError) as e:
        call(oai, route, model)
    assert (e.value.status_code, e.value.param, e.value.code, e.value.type) == (400, "model", "wrong_model_kind", "invalid_request_error")
    assert f"'{model}' is a {kind} model; {route} serves" in e.value.message


# -- the FAQ chatbot ----------------------------------------------------------------------------
SEEDED = {"temperature": 0.9, "top_p": 0.95, "seed": 7}


def ask(oai: openai.OpenAI, route: str, question: str, stream: bool, messages: list | None = None, **kw) -> tuple[str, str | None, int]:
    """(text, finish_reason, number of chunks with text) through `route`, one-shot or streamed."""
    if route == COMPLETIONS:
        if not stream:
            c = oai.completions.create(model=CHATBOT, prompt=question, **kw).choices[0]
            return c.text, c.finish_reason, 1
        chunks = [c.choices[0] for c in oai.completions.create(model=CHATBOT, prompt=question, stream=True, **kw) if c.choices]
        return "".join(c.text for c in chunks), chunks[-1].finish_reason, len([c for c in chunks if c.text])
    messages = (messages or []) + [{"role": "user", "content": question}]
    if not stream:
        response = oai.chat.completions.create(model=CHATBOT, messages=messages, **kw)
        assert response.usage is None and response.choices[0].message.role == "assistant"
        return response.choices[0].message.content or "", response.choices[0].finish_reason, 1
    chunks = list(oai.chat.completions.create(model=CHATBOT, messages=messages, stream=True, **kw))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason is not None
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    return "".join(pieces), chunks[-1].choices[0].finish_reason, len(pieces)


@pytest.mark.parametrize("route", [CHAT_COMPLETIONS, COMPLETIONS])
def test_a_matching_question_gets_the_faq_answer_one_shot_and_streamed(oai, chat, route):
    for question, entry in ((MATCHING, "what-is"), (PARAPHRASES[0]["question"], PARAPHRASES[0]["id"])):
        direct = chat.ask(question, model=CHATBOT)
        assert direct.source == entry  # the chatbot's own routing, at its configured threshold
        for stream in (False, True):
            text, reason, pieces = ask(oai, route, question, stream, max_tokens=20, **SEEDED)
            assert (text, reason, pieces) == (BY_ID[entry].answer, "stop", 1), (route, stream)


@pytest.mark.parametrize("route", [CHAT_COMPLETIONS, COMPLETIONS])
def test_an_unmatched_question_gets_a_generated_answer_and_the_stream_equals_the_one_shot(oai, chat, route):
    direct = chat.ask(UNRELATED, model=CHATBOT, max_new_tokens=20, **SEEDED)
    assert direct.generated and direct.text and direct.finish_reason == "length"
    assert direct.text not in {e.answer for e in BY_ID.values()}
    one_shot = ask(oai, route, UNRELATED, False, max_tokens=20, **SEEDED)
    streamed = ask(oai, route, UNRELATED, True, max_tokens=20, **SEEDED)
    assert one_shot[:2] == streamed[:2] == (direct.text, "length")
    assert streamed[2] > 3  # piece by piece, as the generator streams it
    greedy = ask(oai, route, UNRELATED, False, max_tokens=20, temperature=0)[0]
    assert greedy == chat.ask(UNRELATED, model=CHATBOT, max_new_tokens=20).text != direct.text  # the parameters reach the generator


def test_generation_parameters_reach_the_chatbots_generator(oai, chat):
    """top_k is the generator's top-k sampling (the chatbot's own top_k, its FAQ candidates, keeps its default); stop ends
    the generated text; max_completion_tokens is max_tokens."""
    topk = ask(oai, CHAT_COMPLETIONS, UNRELATED, False, max_completion_tokens=12, extra_body={"top_k": 3}, **SEEDED)
    assert topk[0] == chat.ask(UNRELATED, model=CHATBOT, max_new_tokens=12, gen_top_k=3, **SEEDED).text
    whole = chat.ask(UNRELATED, model=CHATBOT, max_new_tokens=30).text
    stop = whole[6:9]
    stopped = ask(oai, CHAT_COMPLETIONS, UNRELATED, False, max_tokens=30, stop=[stop])
    assert stopped == (whole[: whole.find(stop)], "stop", 1)


def test_earlier_turns_are_the_chatbots_history_and_system_messages_are_not_used(oai, chat):
    """Earlier user and assistant messages reach a generated answer as the chatbot's history; an FAQ match reads the
    question alone; system messages are not used (documented)."""
    turns = [("user", "Where do foxes live?"), ("assistant", "In forests and fields.")]
    earlier = [{"role": "system", "content": "Answer in French."}] + [{"role": r, "content": t} for r, t in turns]
    with_history = chat.ask(UNRELATED, model=CHATBOT, max_new_tokens=12, history=turns, **SEEDED)
    assert with_history.generated and with_history.text != chat.ask(UNRELATED, model=CHATBOT, max_new_tokens=12, **SEEDED).text
    for stream in (False, True):
        assert ask(oai, CHAT_COMPLETIONS, UNRELATED, stream, messages=earlier, max_tokens=12, **SEEDED)[0] == with_history.text
        assert ask(oai, CHAT_COMPLETIONS, MATCHING, stream, messages=earlier, max_tokens=12, **SEEDED)[0] == BY_ID["what-is"].answer
    assert ask(oai, CHAT_COMPLETIONS, UNRELATED, False, messages=earlier[1:], max_tokens=12, **SEEDED)[0] == with_history.text


REFUSED = [  # (route, what the request adds, the param named)
    (CHAT_COMPLETIONS, {"messages": [{"role": "user", "content": MATCHING}, {"role": "assistant", "content": "A toolkit"}]}, "messages"),
    (CHAT_COMPLETIONS, {"extra_body": {"add_generation_prompt": False}}, "add_generation_prompt"),
    (CHAT_COMPLETIONS, {"stream": True, "stream_options": {"include_usage": True}}, "stream_options"),
    (COMPLETIONS, {"stream": True, "stream_options": {"include_usage": True}}, "stream_options"),
    (CHAT_COMPLETIONS, {"max_tokens": 401}, "max_tokens"),  # the chatbot's generator allows 400
    (COMPLETIONS, {"prompt": "   "}, "prompt"),
    (CHAT_COMPLETIONS, {"messages": [{"role": "user", "content": "x" * 5000}]}, "messages"),
    (COMPLETIONS, {"extra_body": {"top_k": -1}}, "top_k"),
]


@pytest.mark.parametrize("route, extra, param", REFUSED, ids=[f"{r}:{p}" for r, _, p in REFUSED])
def test_what_the_chatbot_cannot_honour_is_a_400_naming_the_parameter(oai, route, extra, param, still_serving):
    body = {"model": CHATBOT, **extra}
    with pytest.raises(openai.BadRequestError) as e:  # a stream's too: the gateway answers its status before streaming
        if route == COMPLETIONS:
            oai.completions.create(**{"prompt": MATCHING, **body})
        else:
            oai.chat.completions.create(**{"messages": [{"role": "user", "content": MATCHING}], **body})
    assert (e.value.status_code, e.value.param, e.value.type) == (400, param, "invalid_request_error"), e.value.message
