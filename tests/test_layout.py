"""The shape of the codebase, checked: the contract package is standard library only and the one import path
for its names; data flows one way (a stage imports only the stages before it, and only the host-side deploy
code imports rpi); what runs on the Pi or the FPGA board imports nothing of the host side; no package file
grows past its limit."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each package and what it may import of the project. Only rpi's host side imports rpi.
ALLOWED = {
    "contract": {"contract"},
    "model": {"contract", "model"},
    "quantize": {"contract", "model", "quantize"},
    "export": {"contract", "model", "quantize", "export"},
    "fpga": {"contract", "model", "quantize", "export", "fpga", "rpi"},  # rpi: the board deploys with its machinery
    "budget": {"contract", "model", "quantize", "export", "fpga", "budget"},
    "explore": {"contract", "model", "quantize", "export", "fpga", "explore"},
    "report": {"contract", "report"},
    "rpi": {"contract", "model", "rpi"},  # the host side's sample video reads the test images with model.data
}
PI_SIDE = "rpi/runtime"
BOARD_SIDE = "fpga/board/runtime"
# The only places fpga imports rpi: the board's deploy (the Pi's deploy machinery) and the board side (the
# Pi side's sources and pixel contract).
FPGA_USES_RPI = {"fpga/board/deploy.py": ("rpi.bundle", "rpi.deploy"), BOARD_SIDE: ("rpi.runtime",)}
MAX_LINES = 450
# Longer on purpose: remote.py is piped to the Pi's python3 as one script on stdin, so it cannot import a
# second file.
LONGER = {"rpi/remote.py"}


def package_files():
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "calibration" in rel.parts and ("designs" in rel.parts or "heldout" in rel.parts):
                continue
            yield rel, ast.parse(path.read_text(), str(rel))


def imported(tree, rel: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, names) of every import in a file, relative imports resolved."""
    package = list(rel.parent.parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, [alias.name for alias in node.names]))
    return found


def test_every_package_imports_only_the_stages_before_it():
    wrong = []
    for rel, tree in package_files():
        package = rel.parts[0]
        for module, _ in imported(tree, rel):
            top = module.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[package]:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, wrong


def test_the_pi_side_imports_only_itself_and_the_contract():
    wrong = []
    for rel, tree in package_files():
        if not rel.as_posix().startswith(PI_SIDE + "/"):
            continue
        for module, _ in imported(tree, rel):
            if module.split(".")[0] in ALLOWED and not (module == "contract" or module.startswith("contract.")
                                                         or module.startswith("rpi.runtime")):
                wrong.append(f"{rel} imports {module}")
    assert not wrong, wrong


def test_fpga_imports_rpi_only_to_deploy_and_on_the_board():
    wrong = []
    for rel, tree in package_files():
        if rel.parts[0] != "fpga":
            continue
        allowed = next((mods for where, mods in FPGA_USES_RPI.items()
                        if rel.as_posix() == where or rel.as_posix().startswith(where + "/")), ())
        for module, _ in imported(tree, rel):
            if module.split(".")[0] == "rpi" and not any(module == m or module.startswith(m + ".") for m in allowed):
                wrong.append(f"{rel} imports {module}")
    assert not wrong, wrong


def test_the_board_side_imports_only_itself_the_pi_side_and_the_contract():
    wrong = []
    for rel, tree in package_files():
        if not (rel.as_posix().startswith(BOARD_SIDE + "/") or rel.as_posix() in ("fpga/__init__.py",
                                                                                   "fpga/board/__init__.py")):
            continue
        for module, _ in imported(tree, rel):
            ok = module.split(".")[0] not in ALLOWED or any(module == m or module.startswith(m + ".") for m in
                                                              ("contract", "rpi.runtime", "fpga.board.runtime"))
            if not ok:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, wrong


def test_the_contract_imports_only_the_standard_library():
    code = ("import sys\nbefore = set(sys.modules)\nimport contract, contract.tflite_model\n"
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)"
            " - {'contract'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_nothing_re_exports_the_contract():
    """A name of the contract is imported from the contract, never through a module that imported it."""
    from_contract = {}  # module -> the contract names it imported
    imports = []
    for rel, tree in package_files():
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        for source, names in imported(tree, rel):
            if source == "contract" or source.startswith("contract."):
                from_contract.setdefault(module, set()).update(names)
            imports.append((rel, source, names))
    wrong = [f"{rel} imports {name} from {source}" for rel, source, names in imports
             for name in names if name in from_contract.get(source, set()) and not source.startswith("contract")]
    assert not wrong, wrong


def test_package_files_stay_short():
    long = [f"{rel}: {len((ROOT / rel).read_text().splitlines())} lines" for rel, _ in package_files()
            if rel.as_posix() not in LONGER and len((ROOT / rel).read_text().splitlines()) > MAX_LINES]
    assert not long, long
