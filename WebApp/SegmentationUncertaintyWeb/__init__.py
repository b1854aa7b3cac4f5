"""The Segmentation Uncertainty panels in a browser, on trame-slicer and the same logic classes."""
