from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode  # noqa: F401
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from ConsensusFusionLib.logic import METHODS, FusionOutputs
from ConsensusFusionLib.logic import ConsensusFusionLogic as FusionLogic
from SegmentationUncertaintyLib.fusion import DEFAULT_SMOOTHNESS_MM, default_smoothness_mm
from SegmentationUncertaintyLib.fusion.links import LINKS
from SegmentationUncertaintyLogic.nodes import Cancelled, segment_ids
from SegmentationUncertaintyLogic.overlays import show_map_overlay


class ConsensusFusion(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Consensus Fusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SegmentationUncertainty"]
        self.parent.contributors = ["Segmentation Uncertainty developers"]
        self.parent.helpText = _("Fuse several raters' delineations or networks' probability maps into a robust Student-t consensus, with per-voxel maps of where each rater is an outlier.")
        self.parent.acknowledgementText = _("See the Segmentation Uncertainty README for the papers implemented.")


@parameterNodeWrapper
class ConsensusFusionParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    method: Annotated[str, Choice(list(METHODS))] = "student-t"
    smoothness: Annotated[float, WithinRange(0.0, 30.0)] = DEFAULT_SMOOTHNESS_MM
    link: Annotated[str, Choice(list(LINKS))] = "sqrt"
    mixture: bool = False
    outputConsensus: vtkMRMLSegmentationNode
    outputProbability: vtkMRMLScalarVolumeNode
    outputRaterTable: vtkMRMLTableNode


class ConsensusFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.outputs = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._raters = []  # (segmentation node, segment ID) of each row of the rater list
        self._raterKind = "mask"  # of the checked raters: "mask" (segments) or "probability" (volumes)
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ConsensusFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ConsensusFusionLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *_: self.setParameterNode(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.raterSegmentationsSelector.connect("checkedNodesChanged()", self.updateRaterList)
        self.ui.raterVolumesSelector.connect("checkedNodesChanged()", self.updateRaterKind)
        self.ui.fuseButton.connect("clicked(bool)", self.onFuse)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.raterTableView.connect("clicked(QModelIndex)", self.onRaterClicked)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.updateRaterList()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.outputs = None
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
            self.updateGuiState()

    def updateGuiState(self, caller=None, event=None) -> None:
        robust = self._parameterNode.method in ("student-t", "gaussian")
        self.ui.smoothnessSlider.enabled = robust
        self.ui.linkComboBox.enabled = robust
        self.ui.mixtureCheckBox.enabled = robust
        self.ui.fuseButton.enabled = not self.ui.cancelButton.enabled

    def updateRaterList(self) -> None:
        """List every segment of the checked segmentations as a checkable rater."""
        self.ui.raterListWidget.clear()
        self._raters = []
        for node in self.ui.raterSegmentationsSelector.checkedNodes():
            for segmentId in segment_ids(node):
                item = qt.QListWidgetItem(f"{node.GetName()}: {node.GetSegmentation().GetSegment(segmentId).GetName()}")
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked)
                self.ui.raterListWidget.addItem(item)
                self._raters.append((node, segmentId))
        self.updateRaterKind()

    def updateRaterKind(self) -> None:
        """Each kind of rater starts from its own smoothness: probability volumes fuse better without the prior."""
        raters = self.checkedRaters()
        if not raters or not self._parameterNode:
            return
        kind = "mask" if isinstance(raters[0], tuple) else "probability"
        if kind != self._raterKind:
            self._raterKind = kind
            self._parameterNode.smoothness = default_smoothness_mm(kind)

    def checkedRaters(self) -> list:
        """The checked segments, or else the checked probability volumes."""
        segments = [rater for row, rater in enumerate(self._raters)
                    if self.ui.raterListWidget.item(row).checkState() == qt.Qt.Checked]
        return segments or list(self.ui.raterVolumesSelector.checkedNodes())

    def onProgress(self, fraction: float, message: str) -> bool:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # lets the Cancel button be clicked
        return not self._cancelRequested

    def onCancel(self) -> None:
        self._cancelRequested = True

    def onFuse(self) -> None:
        p = self._parameterNode
        self._cancelRequested = False
        self.ui.cancelButton.enabled = True
        self.updateGuiState()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to fuse the raters."), waitCursor=True):
                outputs = FusionOutputs(consensus=p.outputConsensus, raterTable=p.outputRaterTable,
                                        probabilities=[p.outputProbability] if p.outputProbability else [],
                                        tau=list(self.outputs.tau) if self.outputs else [])
                try:
                    self.outputs = self.logic.fuse(self.checkedRaters(), p.inputVolume, method=p.method,
                                                   smoothness=p.smoothness, link=p.link, mixture=p.mixture,
                                                   outputs=outputs,
                                                   progress=self.onProgress)
                except Cancelled:
                    self.ui.statusLabel.text = _("Cancelled: the new output nodes were removed.")
                    return
                p.outputConsensus, p.outputRaterTable = self.outputs.consensus, self.outputs.raterTable
                p.outputProbability = self.outputs.probabilities[0]
                self.ui.raterTableView.setMRMLTableNode(self.outputs.raterTable)
                if p.inputVolume:
                    slicer.util.setSliceViewerLayers(background=p.inputVolume)
                show_map_overlay(self.outputs.probabilities[0], title=_("Consensus probability"))
                self.ui.statusLabel.text = self.outputs.summary
        finally:
            self.ui.cancelButton.enabled = False
            self.updateGuiState()

    def onRaterClicked(self, index) -> None:
        """Overlay the τ map of the clicked rater (where the consensus trusted it)."""
        if self.outputs is None or not 0 <= index.row() < len(self.outputs.tau):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to show the τ map."), waitCursor=True):
            self.logic.showTau(self.outputs, index.row())


class ConsensusFusionLogic(ScriptedLoadableModuleLogic, FusionLogic):
    """:class:`ConsensusFusionLib.logic.ConsensusFusionLogic` (Qt-free, scriptable) plus the module's parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        FusionLogic.__init__(self)

    def getParameterNode(self):
        return ConsensusFusionParameterNode(super().getParameterNode())


class ConsensusFusionTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_fuseColin27Raters()

    def test_fuseColin27Raters(self):
        """The pytest scenario (Testing/Python/test_consensus_fusion_logic.py) on raters around a real structure."""
        from ConsensusFusionLib.testing import add_rater_case, check_fusion

        self.delayDisplay("Loading the MNI152 T1 and five raters of its lateral ventricles (cropped)")
        volume, raters = add_rater_case("mni152-ventricles")
        modified = [volume.GetMTime(), raters.GetMTime()]
        outputs = check_fusion(ConsensusFusionLogic(), volume, raters)
        self.assertEqual([volume.GetMTime(), raters.GetMTime()], modified, "an input node was modified")
        self.delayDisplay(outputs.summary)
