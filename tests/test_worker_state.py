"""No hidden worker state: nothing in pipelines/ or transforms/ keeps mutable state at module
level (a cache, a pool, a lock, a registry). What lives between tasks lives in the
``pipelines.worker.Worker`` that each engine makes and closes, so a test, a second run in the
same process, or a second config never meets the first one's leftovers."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "transforms")
# Calls whose result is mutable state: containers, synchronization, pools, thread-locals.
STATEFUL_CALLS = {
    "dict",
    "list",
    "set",
    "defaultdict",
    "Counter",
    "OrderedDict",
    "deque",
    "local",
    "Lock",
    "RLock",
    "Condition",
    "Event",
    "Semaphore",
    "Queue",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "WeakValueDictionary",
    "WeakKeyDictionary",
}
CONTAINER_NODES = (ast.Dict, ast.List, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
# Memoized pure functions of files that ship with the package (a prompt, a class list, a
# compiled pattern): the same answer for every run, so not worker state.
PURE_CACHES = {
    "transforms/describe/grounding.py:class_words",
    "transforms/describe/prompt.py:_compiled",
    "transforms/describe/prompt.py:load_prompt",
    "transforms/describe/prompt.py:_control_pattern",
    "transforms/visual.py:imagenet_classes",
}
# Spark has no per-worker setup hook: its Python worker's Worker needs one process-wide slot.
ALLOWED = {"pipelines/engines/spark.py:_EXECUTOR_WORKER"}


def module_state(path: Path, root: Path = ROOT) -> list[str]:
    """``file:name`` for each module-level binding of mutable state in ``path``: a lower-case
    or private name bound to a container, any name bound to a stateful call, a ``global``
    statement, and a cached function that is not a known pure one."""
    relative = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:
        target, value = binding(node)
        if target is None or target == "__all__":
            continue
        constant = target.isupper() and not target.startswith("_")
        if (isinstance(value, CONTAINER_NODES) and not constant) or stateful_call(value):
            found.append(f"{relative}:{target}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{relative}:global {', '.join(node.names)}")
        if isinstance(node, ast.FunctionDef) and cached(node):
            found.append(f"{relative}:{node.name}")
    return [name for name in found if name not in ALLOWED and name not in PURE_CACHES]


def binding(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
        return node.target.id, node.value
    return None, None


def stateful_call(value: ast.expr) -> bool:
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in STATEFUL_CALLS


def cached(function: ast.FunctionDef) -> bool:
    """Decorated with ``functools.cache`` or ``lru_cache`` (module functions only: a method's
    ``cached_property`` lives and dies with its object)."""
    names = {ast.unparse(d).split("(")[0].rsplit(".", 1)[-1] for d in function.decorator_list}
    return bool(names & {"cache", "lru_cache"})


def test_no_module_level_worker_state_in_pipelines_or_transforms():
    found = [
        name
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in module_state(path)
    ]
    assert found == [], f"module-level state; keep it in pipelines.worker.Worker: {found}"


def test_the_scan_finds_each_kind_of_state(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import threading, functools\n"
        "_CACHE: dict = {}\n"
        "pool = []\n"
        "LOCK = threading.Lock()\n"
        "TABLE = {'a': 1}\n"
        "def f():\n    global pool\n"
        "@functools.lru_cache(maxsize=4)\ndef g(x):\n    return x\n"
    )
    assert sorted(module_state(sample, tmp_path)) == [
        "sample.py:LOCK",
        "sample.py:_CACHE",
        "sample.py:g",
        "sample.py:global pool",
        "sample.py:pool",
    ]
