"""Prefect Blocks of prefect-hcs (exposed to Prefect through the `prefect.collections` entry point)."""

from prefect_hcs.blocks.config_blocks import HcsGlobalConfig, HcsPipelineConfig
from prefect_hcs.blocks.omero_credentials import OmeroCredentials
from prefect_hcs.blocks.slurm import HcsSlurmCluster

__all__ = ["HcsGlobalConfig", "HcsPipelineConfig", "HcsSlurmCluster", "OmeroCredentials"]
