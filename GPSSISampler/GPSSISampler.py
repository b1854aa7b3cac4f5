import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


class GPSSISampler(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GPSSI Sampler")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SegmentationUncertainty"]
        self.parent.contributors = ["Segmentation Uncertainty developers"]
        self.parent.helpText = _("Draw plausible segmentations around a reference: a Gaussian process on the level set (GPSSI), more variable where the image border is weak, with the spread set as an inter-sample DICE.")
        self.parent.acknowledgementText = _("See the Segmentation Uncertainty README for the papers implemented.")


class GPSSISamplerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GPSSISampler.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)


class GPSSISamplerTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.assertIsNotNone(slicer.util.getModule("GPSSISampler"))
