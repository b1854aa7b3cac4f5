from typing import Annotated

import slicer
import vtk
from slicer import (vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,  # noqa: F401
                    vtkMRMLTableNode)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Minimum, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from GPSSISamplerLib.logic import GPSSISamplerLogic as SamplerLogic, SOURCE_TITLES, SamplerOutputs, SamplingCancelled
from SegmentationUncertaintyLogic.overlays import show_map_overlay

# Parameter-node output fields -> SamplerOutputs fields.
OUTPUT_FIELDS = {"outputSamples": "samples", "outputFrequency": "frequency", "outputEntropy": "entropy",
                 "outputMeanLevel": "meanLevel", "outputTable": "table", "outputChart": "curveChart"}


class GPSSISampler(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GPSSI Sampler")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SegmentationUncertainty"]
        self.parent.contributors = ["Segmentation Uncertainty developers"]
        self.parent.helpText = _("Draw plausible segmentations around a reference: a Gaussian process on the level set (GPSSI), more variable where the image border is weak, with the spread set as an inter-sample DICE.")
        self.parent.acknowledgementText = _("See the Segmentation Uncertainty README for the papers implemented.")


@parameterNodeWrapper
class GPSSISamplerParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    referenceSegmentation: vtkMRMLSegmentationNode
    source: Annotated[str, Choice(list(SOURCE_TITLES))] = "gpssi"
    targetDice: Annotated[float, WithinRange(0.5, 0.99)] = 0.85
    numberOfSamples: Annotated[int, WithinRange(2, 500)] = 20
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    automaticGamma: bool = True
    gamma: Annotated[float, Minimum(0.0)] = 1.0
    h: Annotated[float, WithinRange(0.0, 10.0)] = 1.0
    automaticOmega1: bool = True
    omega1: Annotated[float, WithinRange(0.1, 500.0)] = 10.0
    outputSamples: vtkMRMLSegmentationNode
    outputFrequency: vtkMRMLScalarVolumeNode
    outputEntropy: vtkMRMLScalarVolumeNode
    outputMeanLevel: vtkMRMLScalarVolumeNode
    outputTable: vtkMRMLTableNode
    outputChart: vtkMRMLPlotChartNode


class GPSSISamplerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GPSSISampler.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = GPSSISamplerLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *_: self.setParameterNode(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.referenceSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                                      self.ui.referenceSegmentSelector.setCurrentNode)
        self.ui.targetDiceSlider.connect("valueChanged(double)", lambda _value: self.updateCurve(compute=False))
        self.ui.curveButton.connect("clicked(bool)", lambda: self.updateCurve(compute=True))
        self.ui.generateButton.connect("clicked(bool)", self.onGenerate)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.referenceSegmentation:
            self._parameterNode.referenceSegmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
            self.ui.referenceSegmentSelector.setCurrentNode(self._parameterNode.referenceSegmentation)
            self.updateGuiState()

    def updateGuiState(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p.inputVolume and p.referenceSegmentation)
        self.ui.generateButton.enabled = ready and not self.ui.cancelButton.enabled
        self.ui.curveButton.enabled = ready and p.source == "gpssi"
        self.ui.targetDiceSlider.enabled = p.source == "gpssi"
        self.ui.gammaSpinBox.enabled = not p.automaticGamma
        self.ui.omega1SpinBox.enabled = not p.automaticOmega1

    def modelParameters(self) -> dict:
        p = self._parameterNode
        return {"gamma": None if p.automaticGamma else p.gamma, "h": p.h,
                "omega1": None if p.automaticOmega1 else p.omega1}

    def segmentId(self):
        return self.ui.referenceSegmentSelector.currentSegmentID() or None

    def updateCurve(self, compute: bool) -> None:
        """Show the ω0 of the slider's DICE and the curve: at once when the model is cached, else on request."""
        p = self._parameterNode
        if p is None or p.source != "gpssi" or not (p.inputVolume and p.referenceSegmentation) or not compute \
                and not self.logic.isModelReady(p.inputVolume, p.referenceSegmentation, self.segmentId(),
                                                **self.modelParameters()):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the ω0–DICE curve."), waitCursor=True):
            out = self.logic.plotDiceCurve(p.inputVolume, p.referenceSegmentation, p.targetDice, self.segmentId(),
                                           seed=p.seed, outputs=SamplerOutputs(curveChart=p.outputChart),
                                           **self.modelParameters())
            p.outputChart = out.curveChart
            self.showCurve(out)

    def showCurve(self, outputs) -> None:
        view = self.ui.curvePlotWidget.mrmlPlotViewNode()
        if view is None or view.GetScene() is None:
            view = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode", "GPSSISampler curve view")
            self.ui.curvePlotWidget.setMRMLPlotViewNode(view)
        view.SetPlotChartNodeID(outputs.curveChart.GetID())
        self.ui.omega0Label.text = _("{omega0:.3g} mm²").format(omega0=outputs.omega0)

    def onProgress(self, fraction: float, message: str) -> bool:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # lets the Cancel button be clicked
        return not self._cancelRequested

    def onCancel(self) -> None:
        self._cancelRequested = True

    def onGenerate(self) -> None:
        p = self._parameterNode
        self._cancelRequested = False
        self.ui.cancelButton.enabled = True
        self.updateGuiState()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to generate the samples."), waitCursor=True):
                outputs = SamplerOutputs(**{field: getattr(p, name) for name, field in OUTPUT_FIELDS.items()})
                try:
                    outputs = self.logic.generate(
                        p.inputVolume, p.referenceSegmentation, self.segmentId(), source=p.source,
                        targetDice=p.targetDice, numberOfSamples=p.numberOfSamples, seed=p.seed, outputs=outputs,
                        progress=self.onProgress, **self.modelParameters())
                except SamplingCancelled:
                    self.ui.statusLabel.text = _("Cancelled: the new output nodes were removed.")
                    return
                for name, field in OUTPUT_FIELDS.items():
                    setattr(p, name, getattr(outputs, field))
                if outputs.curveChart is not None and outputs.omega0 is not None:
                    self.showCurve(outputs)
                slicer.util.setSliceViewerLayers(background=p.inputVolume)
                show_map_overlay(outputs.entropy, title=_("Sample entropy (bits)"))
                self.ui.statusLabel.text = _("{n} samples, mean pairwise DICE {dice:.3f}").format(
                    n=p.numberOfSamples, dice=outputs.measuredDice)
        finally:
            self.ui.cancelButton.enabled = False
            self.updateGuiState()


class GPSSISamplerLogic(ScriptedLoadableModuleLogic, SamplerLogic):
    """:class:`GPSSISamplerLib.logic.GPSSISamplerLogic` (Qt-free, scriptable) plus the module's parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SamplerLogic.__init__(self)

    def getParameterNode(self):
        return GPSSISamplerParameterNode(super().getParameterNode())


class GPSSISamplerTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_generateOnMNI152Ventricles()

    def test_generateOnMNI152Ventricles(self):
        """The pytest scenario (Testing/Python/test_gpssi_sampler_logic.py) on the real MNI152 ventricles."""
        from GPSSISamplerLib.testing import add_cropped_sample_case, check_gpssi_generation

        self.delayDisplay("Loading the MNI152 T1 and its lateral ventricles (cropped)")
        volume, reference = add_cropped_sample_case("mni152-ventricles")
        modified = [volume.GetMTime(), reference.GetMTime()]
        outputs = check_gpssi_generation(GPSSISamplerLogic(), volume, reference, targetDice=0.9,
                                         numberOfSamples=12, seed=3)
        self.assertEqual([volume.GetMTime(), reference.GetMTime()], modified, "an input node was modified")
        self.delayDisplay(f"Mean pairwise DICE {outputs.measuredDice:.3f} at ω0 = {outputs.omega0:.3g} mm²")
