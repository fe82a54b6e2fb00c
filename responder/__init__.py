"""Intune compliance responder for Azure VMs: the core (intake, decisions, adapters)."""
