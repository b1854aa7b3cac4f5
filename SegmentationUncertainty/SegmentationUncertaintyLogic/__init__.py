"""MRML-level logic shared by the three modules (imports slicer; never qt/ctk).

``standalone`` makes a real slicer-core scene usable outside the Slicer application (tests, CLI, web
app); ``nodes`` moves arrays in and out of volume and segmentation nodes.
"""
