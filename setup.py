"""Packaging for mct-logger: the library, its TensorBoard plugins and their browser code."""

from setuptools import find_packages, setup

setup(
    name="mct-logger",
    version="0.1.0",
    description=(
        "Keras 3 post-training quantization whose every stage and diagnosis "
        "shows up in TensorBoard."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # One subpackage per concept (graph, data, quantization, ...), found from the tree.
    packages=find_packages(include=["mct_logger", "mct_logger.*"]) + [
        "mct_logger.tb_plugin",
        "mct_logger.tb_plugin.frontend",
    ],
    # The TensorBoard plugins (tb_plugin/) and their browser code (frontend/)
    # live at the repository's top level and install inside mct_logger, so
    # site-packages never holds a generic top-level "tb_plugin".
    package_dir={
        "mct_logger.tb_plugin": "tb_plugin",
        "mct_logger.tb_plugin.frontend": "frontend",
    },
    # frontend/common/ and one folder per tab; "**" keeps a new tab folder shipping.
    package_data={"mct_logger.tb_plugin.frontend": ["**/*.js", "**/*.css", "**/*.html"]},
    install_requires=[
        "tensorflow>=2.17",
        "keras>=3,<4",
        "tensorboard>=2.17",
        "numpy",
        "protobuf",
        "matplotlib",  # the Images tab's similarity plots
        "pillow",  # palette PNGs for those plots
        "plotly<8",
        # C crc32c for the event-file writer (TensorBoard's is pure Python).
        "google-crc32c",
    ],
    extras_require={
        # The demo trains on scikit-learn's bundled digits (no download).
        "demo": ["scikit-learn"],
        # keras-hub: the KerasHub backbones (built from config, no download) whose
        # composite transformer blocks the quantization tests reach into.
        "test": ["pytest", "scikit-learn", "playwright", "keras-hub"],
    },
    entry_points={
        "console_scripts": ["mct-logger = mct_logger.cli:main"],
        # One TensorBoard tab each, found without flags once the package is installed.
        "tensorboard_plugins": [
            "quant_analyzer = mct_logger.tb_plugin.quant_analyzer_plugin:QuantAnalyzerPlugin",
            "cle = mct_logger.tb_plugin.cle_plugin:CLEPlugin",
            "compression = mct_logger.tb_plugin.compression_plugin:CompressionPlugin",
        ],
    },
)
