"""Admission: every object the emulator stores is validated strictly for one Kubernetes version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate

from .store import ApiError


def strict_validation(version: str) -> Callable[[dict[str, Any]], None]:
    """An admit function: 422 Invalid naming the object and the field, as the API server does."""

    def admit(obj: dict[str, Any]) -> None:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            field = ".".join(str(part) for part in error.path) or "(root)"
            name = (obj.get("metadata") or {}).get("name", "?")
            raise ApiError(
                422, f'{obj.get("kind")} "{name}" is invalid: {field}: {error.message} (Kubernetes {version})'
            ) from None
        except kubernetes_validate.SchemaNotFoundError:
            raise ApiError(
                422, f"no schema for {obj.get('apiVersion')}/{obj.get('kind')} in Kubernetes {version}"
            ) from None

    return admit
