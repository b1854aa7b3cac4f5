"""SegmentationUncertaintyLogic: the reference, sample data and (later) uncertainty maps, on MRML nodes."""

from __future__ import annotations

from .sample_scenes import DEFAULT_CASE, SAMPLE_CASES, load_sample_case


class SegmentationUncertaintyLogic:
    """Qt-free logic of the SegmentationUncertainty module, scriptable from the Slicer Python console.

    Example
    -------
    >>> logic = SegmentationUncertaintyLogic()
    >>> volume, reference = logic.loadSampleCase("mni152-ventricles")
    """

    sampleCases = {key: title for key, (title, _loader) in SAMPLE_CASES.items()}

    def loadSampleCase(self, key: str = DEFAULT_CASE):  # noqa: N802 (Slicer API style)
        """Add a sample image volume and its reference segmentation to the scene; see :data:`SAMPLE_CASES`."""
        return load_sample_case(key)
