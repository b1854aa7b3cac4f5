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

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegmentationUncertainty.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegmentationUncertaintyLogic()
        for key, title in self.logic.sampleCases.items():
            self.ui.sampleCaseComboBox.addItem(title, key)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.openSamplerButton.connect("clicked(bool)", lambda: slicer.util.selectModule("GPSSISampler"))
        self.ui.openFusionButton.connect("clicked(bool)", lambda: slicer.util.selectModule("ConsensusFusion"))

    def onLoadSample(self) -> None:
        key = self.ui.sampleCaseComboBox.currentData
        with slicer.util.tryWithErrorDisplay(_("Failed to load the sample case."), waitCursor=True):
            volume, segmentation = self.logic.loadSampleCase(key)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.ui.inputVolumeSelector.setCurrentNode(volume)
            self.ui.referenceSegmentSelector.setCurrentNode(segmentation)


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
