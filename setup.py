"""Packaging of the plugin: ``pip install -e .`` into an existing fast-reid environment.

``install_requires`` lists what the plugin imports at run time (``plugins/``, ``projects/``,
``tools/``) as compatible ranges; the pinned ``requirements*.txt`` stay the tested set that
``make install`` uses. fastreid itself is not listed: its metadata pins ``torch==1.13.1``, so it
is installed on its own with ``pip install --no-deps fastreid==1.4.0`` (as the Makefile does);
the fast-reid modules the plugin imports need scikit-learn and tensorboard, listed here for
that reason. ``faiss-cpu`` provides the ``faiss`` module; a GPU build (PyPI's ``faiss-gpu`` or
``faiss-gpu-cu12``, conda's ``faiss-gpu``) provides the same module and replaces it. The one
C extension (the ranking metrics' counting pass) is built from Cython at install time.
"""

from setuptools import Extension, find_packages, setup


def rank_kernel():
    """The compiled counting pass of ``plugins.evaluation.metrics`` (optional: without a C
    compiler or Cython the install goes on, and the metrics use their pure torch path)."""
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    ext = Extension(
        "plugins.evaluation._rank_kernel",
        ["plugins/evaluation/_rank_kernel.pyx"],
        include_dirs=["plugins/evaluation"],
        depends=["plugins/evaluation/rank_kernel.h"],
        extra_compile_args=["-O3"],
        optional=True,
    )
    return cythonize([ext], quiet=True)


setup(
    name="fastreid-crossmodal",
    version="0.1.0",
    description="Cross-modal person retrieval (text-image, text-RGBT, visible-infrared) as a fast-reid plugin",
    packages=find_packages(include=["plugins", "plugins.*", "projects", "projects.*"]),
    package_data={"plugins.modeling": ["model_configs/*.json"]},
    ext_modules=rank_kernel(),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",  # open-clip-torch needs it too; keep your own CUDA build
        "torchvision",  # whichever build matches the installed torch
        "open-clip-torch>=3.3,<4",  # the plugin builds towers from open_clip's own classes
        "faiss-cpu>=1.8,<2",  # or a GPU faiss build in its place (same `faiss` module)
        "numpy>=1.25,<3",
        "pillow>=9.1",  # Image.Resampling
        "regex",  # the caption tokenizer
        "yacs>=0.1.8,<0.2",  # configs (fast-reid's CfgNode)
        "tabulate>=0.9",
        "termcolor>=2.2,<4",
        # imported by the fast-reid modules the plugin uses (fastreid is installed --no-deps)
        "scikit-learn>=1.2,<2",
        "tensorboard>=2.12,<3",
    ],
    extras_require={
        # tools/export_onnx.py (torch's exporter translates through onnxscript) and
        # plugins.search.onnx_encoders (onnxruntime alone runs the exported files); onnxruntime-gpu
        # may replace onnxruntime for CUDA inference.
        "onnx": ["onnx>=1.17,<2", "onnxscript>=0.5,<1", "onnxruntime>=1.20,<2"],
    },
)
