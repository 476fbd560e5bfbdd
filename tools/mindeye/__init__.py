"""PyTorch rebuilds of the MindEye networks and their ONNX export for mindeye-rt.

Run with Debian's /usr/bin/python3 (python3-torch 1.13, python3-onnx). The modules mirror the
public MindEye code's structure so that its checkpoints load with strict key matching. The
source repositories are MedARC-AI/fMRI-reconstruction-NSD (MindEye1), MedARC-AI/MindEyeV2 and
lucidrains/DALLE2-pytorch (the diffusion prior's transformer and noise schedule).
"""
