from setuptools import find_packages, setup

setup(
    name="fastreid-crossmodal",
    version="0.1.0",
    description="Cross-modal person retrieval (text-image, text-RGBT, visible-infrared) as a fast-reid plugin",
    packages=find_packages(include=["plugins", "plugins.*", "projects", "projects.*"]),
    package_data={"plugins.modeling": ["model_configs/*.json"]},
    python_requires=">=3.10",
)
