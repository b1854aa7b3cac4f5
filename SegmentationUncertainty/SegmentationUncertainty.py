import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from SegmentationUncertaintyLogic.logic import SegmentationUncertaintyLogic  # noqa: F401 (re-exported for Slicer)


class SegmentationUncertainty(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Segmentation Uncertainty")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["Segmentation Uncertainty developers"]
        self.parent.helpText = _("Draw or pick a reference segmentation, overlay uncertainty maps and read the "
                                 "uncertainty metrics. Samples come from GPSSI Sampler, consensus from Consensus Fusion.")
        self.parent.acknowledgementText = _("Implements GPSSI (Le et al., MICCAI 2015) and related work; see README.")


class SegmentationUncertaintyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.maps = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegmentationUncertainty.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegmentationUncertaintyLogic()
        for key, title in self.logic.sampleCases.items():
            self.ui.sampleCaseComboBox.addItem(title, key)
        self.ui.colorTableComboBox.addItems(list(self.logic.colorTables))
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(
            slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "SegmentationUncertaintyEditor"))
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.computeMapsButton.connect("clicked(bool)", self.onComputeMaps)
        self.ui.entropyButton.connect("clicked(bool)", lambda: self.onOverlay("entropy"))
        self.ui.frequencyButton.connect("clicked(bool)", lambda: self.onOverlay("frequency"))
        self.ui.gammaButton.connect("clicked(bool)", lambda: self.onOverlay("gamma"))
        self.ui.hideOverlayButton.connect("clicked(bool)", self.logic.hideOverlay)
        self.ui.tauMapSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOverlayNode)
        self.ui.referenceSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                                 self.ui.segmentEditorWidget.setSegmentationNode)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                            self.ui.segmentEditorWidget.setSourceVolumeNode)
        self.ui.openSamplerButton.connect("clicked(bool)", lambda: slicer.util.selectModule("GPSSISampler"))
        self.ui.openFusionButton.connect("clicked(bool)", lambda: slicer.util.selectModule("ConsensusFusion"))

    def onLoadSample(self) -> None:
        key = self.ui.sampleCaseComboBox.currentData
        with slicer.util.tryWithErrorDisplay(_("Failed to load the sample case."), waitCursor=True):
            volume, segmentation = self.logic.loadSampleCase(key)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.ui.inputVolumeSelector.setCurrentNode(volume)
            self.ui.referenceSegmentSelector.setCurrentNode(segmentation)

    def onComputeMaps(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the uncertainty maps."), waitCursor=True):
            progress = slicer.util.createProgressDialog(labelText=_("Computing uncertainty maps"), maximum=100)
            try:
                self.maps = self.logic.computeUncertaintyMaps(
                    self.ui.inputVolumeSelector.currentNode(), self.ui.samplesSelector.currentNode(),
                    reference=self.ui.referenceSegmentSelector.currentNode(),
                    referenceSegmentId=self.ui.referenceSegmentSelector.currentSegmentID() or None,
                    progress=lambda f, message: (progress.setValue(int(100 * f)), progress.setLabelText(message),
                                                 slicer.app.processEvents()))
            finally:
                progress.close()
            self.ui.metricsTableView.setMRMLTableNode(self.maps.metrics)
            self.onOverlay("entropy")

    def onOverlay(self, name: str) -> None:
        if self.maps is not None:
            self.onOverlayNode(getattr(self.maps, name))

    def onOverlayNode(self, node) -> None:
        if node is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to show the map."), waitCursor=True):
            self.logic.showOverlay(node, colorTable=self.ui.colorTableComboBox.currentText,
                                   opacity=self.ui.opacitySlider.value)


class SegmentationUncertaintyTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_loadSampleCase()

    def test_loadSampleCase(self):
        import numpy as np
        volume, segmentation = SegmentationUncertaintyLogic().loadSampleCase("mni152-ventricles")
        segmentId = segmentation.GetSegmentation().GetNthSegmentID(0)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        self.assertEqual(mask.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertGreater(int(np.count_nonzero(mask)), 10000)  # ~18 ml of ventricles at 1 mm
        self.delayDisplay("Sample case loaded")
