"""The family registry (`tritonize.families`) is complete: each family has a converter, a runtime, a
client, a demo step and tests; every object it names imports; every config `task` the converters write
belongs to exactly one family; and the CLI, the demo and the gateway read it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tritonize.families import CHAT_COMPLETIONS, COMPLETIONS, FAMILIES, resolve, served_kinds

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Where a pipeline's `task` parameter is written: the converters and the contract they write through.
WRITERS = (ROOT / "converters", ROOT / "tritonize" / "contract")


def _named(family) -> dict[str, str]:
    """Every import path a family names, by what it is."""
    paths = {f"converter {alias}": path for alias, path in family.converters.items()}
    paths |= {f"served {role}": path for role, path in family.runtime.served.items()}
    paths |= {f"engine {backend} {i}": path for backend, classes in family.runtime.engines.items() for i, path in enumerate(classes)}
    paths |= {"client": family.client, "async client": family.async_client, "cli": family.cli, "demo": family.demo}
    if family.torch_converter:
        paths["torch converter"] = family.torch_converter
    return paths


NAMED = [(f.name, what, path) for f in FAMILIES for what, path in _named(f).items()]


def test_every_family_has_a_converter_a_runtime_a_client_a_demo_step_and_tests():
    from tritonize.contract.engines import ENGINES

    for f in FAMILIES:
        assert f.aliases and f.tasks and f.client and f.async_client and f.demo and f.cli, f.name
        assert set(f.converters) == set(f.aliases), f"{f.name}: every `convert` alias needs its converter"
        assert f.runtime.served, f"{f.name}: no served model class"
        # A family with engines has both (ONNX Runtime and PyTorch) and a converter for each; one without calls others' models.
        assert set(f.runtime.engines) in (set(), set(ENGINES)), f.name
        assert bool(f.torch_converter) == bool(f.runtime.engines), f.name
        for folder in (ROOT / "converters" / f.name, ROOT / "tritonize" / "runtime" / f.name):
            assert (folder / "__init__.py").is_file(), f"{f.name}: no package {folder}"
        assert list((ROOT / "tests" / f.name).glob("test_*.py")), f"{f.name}: no tests/{f.name}/test_*.py"


def test_names_and_aliases_are_unique():
    names = [n for f in FAMILIES for n in (f.name, *f.aliases)]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("family,what,path", NAMED, ids=[f"{f}-{w}" for f, w, _ in NAMED])
def test_every_named_object_resolves(family, what, path):
    from tritonize.commands.demo_steps import DemoStep

    obj = resolve(path)
    if what == "demo":
        assert isinstance(obj, DemoStep)
    elif what.startswith(("served", "engine", "client", "async client")):
        assert inspect.isclass(obj), path
    else:
        assert callable(obj), path


def _written_tasks() -> set[str]:
    """Every `task` value the writers spell out: `"task": "x"` in a dict, `task="x"` as an argument or a
    field default, and the values of a module-level TASKS table (a converter that takes the task as an option)."""
    found = set()
    for path in (p for root in WRITERS for p in root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Dict):
                pairs = list(zip(node.keys, node.values))
            elif isinstance(node, ast.keyword) and node.arg == "task":
                pairs = [(ast.Constant("task"), node.value)]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                pairs = [(ast.Constant(t.id), node.value) for t in targets if isinstance(t, ast.Name) and t.id == "task"]
            found |= {v.value for k, v in pairs
                      if isinstance(k, ast.Constant) and k.value == "task" and isinstance(v, ast.Constant) and isinstance(v.value, str)}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TASKS" for t in node.targets):
                values = node.value.keys if isinstance(node.value, ast.Dict) else getattr(node.value, "elts", [])
                found |= {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return found


def test_every_task_the_converters_write_maps_to_exactly_one_family():
    written = _written_tasks()
    for task in written:
        owners = [f.name for f in FAMILIES if task in f.tasks]
        assert len(owners) == 1, f"task {task!r} belongs to {owners or 'no family'}"
    registered = {t for f in FAMILIES for t in f.tasks}
    assert registered <= written, f"no converter writes {sorted(registered - written)}"


def test_the_cli_registers_every_alias_in_the_registrys_order():
    from tritonize.cli import convert_app

    assert [c.name for c in convert_app.registered_commands] == [a for f in FAMILIES for a in f.aliases]


def test_the_chatbot_comes_after_the_families_it_calls():
    order = [f.name for f in FAMILIES]
    assert order.index("chat") > max(order.index("encoders"), order.index("generation"))


def test_the_demo_runs_each_familys_step_in_order_then_the_load_test():
    from tritonize.commands import demo, load

    assert demo.steps() == [resolve(f.demo) for f in FAMILIES] + [load.DEMO]


def test_every_endpoint_a_family_names_is_a_gateway_route():
    from tritonize.gateway.routers import router

    routes = {route.path for route in router.routes}
    assert {e for f in FAMILIES for e in f.endpoints} <= routes
    for f in FAMILIES:
        for endpoint, kinds in f.endpoints.items():
            assert set(kinds) <= set(f.tasks), f"{f.name} serves {kinds} at {endpoint}: not its tasks"
    # the generation endpoints take generators and chatbots alike (the error message lists them in this order)
    assert served_kinds(COMPLETIONS) == served_kinds(CHAT_COMPLETIONS) == ("generation", "chat")
