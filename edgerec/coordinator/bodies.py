"""Request bodies the handlers parse themselves (after authentication), and how the
OpenAPI schema still documents them."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ValidationError

from edgerec.federated import wire

from .errors import ApiError


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """Document a request body that the handler parses itself (after authentication)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def parse_body(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    """The validated body as a dict: 400 for malformed JSON, 422 naming each schema error."""
    raw = await request.body()
    try:
        obj = model.model_validate_json(raw)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e.get("type") == "json_invalid" for e in errs):
            raise ApiError(400, wire.E_MALFORMED, "request body is not valid JSON") from None
        raise ApiError(
            422,
            wire.E_INVALID,
            "request body does not match the schema",
            errors=jsonable_encoder(errs),
        ) from None
    return obj.model_dump()
