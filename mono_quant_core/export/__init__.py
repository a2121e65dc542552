"""Exports of quantized models to formats that other runtimes read (ONNX QDQ: :mod:`.onnx_qdq`).

Imported on demand: the ONNX packages are the optional ``[export]`` extra.
"""
