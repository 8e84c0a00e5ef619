"""Model control through Triton's repository API (explicit mode, behind the admin key): what is loaded,
which models clients call directly, reload one, unload the entry points for a drain."""

from __future__ import annotations

import json
import time

import tritonclient.grpc as grpcclient

from tritonize.contract.chat import CALLS_PARAMETER  # a chatbot names the pipelines it calls (BLS)


class ModelControl:
    def __init__(self, grpc_url: str, headers: dict[str, str]):
        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.headers = headers

    def index(self) -> dict[str, dict]:
        """Model name -> {'state': READY | UNAVAILABLE | LOADING | UNLOADING, 'reason': ...}."""
        models = self.client.get_model_repository_index(headers=self.headers, as_json=True).get("models", [])
        return {m["name"]: m for m in models}

    def ready_models(self) -> list[str]:
        return [name for name, m in self.index().items() if m.get("state") == "READY"]

    def entry_models(self) -> list[str]:
        """Loaded models that no ensemble uses as a step: what clients call (ensembles, generators,
        streaming voices). Unloading these first lets ensembles' in-flight requests finish their steps."""
        return [m for wave in self.drain_waves() for m in wave]

    def drain_waves(self) -> list[list[str]]:
        """The entry models in the order a drain unloads them: first the models that call others through
        BLS (a chatbot names its callees in the `tritonize_calls` parameter), then the rest. BLS calls are
        not ensemble steps, so without this order the embedder and generator a chatbot calls would refuse
        its in-flight requests' sub-requests."""
        ready = self.ready_models()
        steps, callers = set(), set()
        for name in ready:
            config = self.client.get_model_config(name, as_json=True)["config"]
            for step in config.get("ensemble_scheduling", {}).get("step", []):
                steps.add(step["model_name"])
            if config.get("parameters", {}).get(CALLS_PARAMETER, {}).get("string_value"):
                callers.add(name)
        entry = [m for m in ready if m not in steps]
        waves = [[m for m in entry if m in callers], [m for m in entry if m not in callers]]
        return [w for w in waves if w]

    def reload(self, model: str, generation: int) -> None:
        """Load `model` anew: new instances (and stubs) replace the old ones. Triton skips a load whose
        files and config are unchanged, so the config carries a restart counter (the steps ignore it)."""
        config = self.client.get_model_config(model, as_json=True)["config"]
        config.setdefault("parameters", {})["tritonize_restart"] = {"string_value": str(generation)}
        self.client.load_model(model, headers=self.headers, config=json.dumps(config))

    def unload(self, models: list[str], timeout_s: float) -> list[str]:
        """Unload models; Triton refuses their new requests at once and finishes the in-flight ones
        (an ensemble's steps stay loaded, so its requests complete). Returns those still unloading
        when the time ran out."""
        for m in models:
            self.client.unload_model(m, headers=self.headers, unload_dependents=False)
        deadline = time.monotonic() + timeout_s
        pending = list(models)
        while pending and time.monotonic() < deadline:
            index = self.index()
            pending = [m for m in pending if index.get(m, {}).get("state") in ("READY", "UNLOADING")]
            if pending:
                time.sleep(0.1)
        return pending

    def close(self) -> None:
        self.client.close()
