"""Training the FEC-style expression backbone (`fec`): dataset readers, a synthetic set, the loop.

Stage one only loads the result (embed.backbones.fec); this package makes it: `python -m embed
fec-train` trains FECNet's head on an Inception-ResNet-V1 trunk with the Google FEC triplets and
AffectNet expression classes, and writes a state dict the `fec` backbone loads strictly.
"""
