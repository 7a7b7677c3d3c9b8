"""Stage 3, explanations: Captum maps of finding scores, regions and their location in words, overlays."""
