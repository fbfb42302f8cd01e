"""Thin task recipes built from samplers, guidance and trained models."""
