"""Prefect Blocks of prefect-hcs (exposed to Prefect through the `prefect.collections` entry point)."""

from prefect_hcs.blocks.config_blocks import HcsGlobalConfig, HcsPipelineConfig

__all__ = ["HcsGlobalConfig", "HcsPipelineConfig"]
