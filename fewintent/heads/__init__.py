"""Heads: prototypical classification over embeddings."""

from fewintent.heads.proto import Distance, PrototypicalHead, class_means

__all__ = ["Distance", "PrototypicalHead", "class_means"]
