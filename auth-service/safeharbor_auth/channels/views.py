"""Channels' HTTP views."""
from __future__ import annotations

from flask import Response
from safeharbor_common.web import api_doc, json_body

from ..http import FULL_OR_BREAK_GLASS, STREAM_API, auth_context, claims, json_response, live, live_session
from . import schemas, service

bp = STREAM_API


@bp.post("/v1/stream-credentials")
@api_doc(summary="A Stream user token for this session (exp = the session token's exp)",
         response_model=schemas.StreamCredentials)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def stream_credentials() -> Response:
    _, user = live()
    return json_response(service.stream_credentials(ctx=auth_context(), claims=claims(), user=user))


@bp.get("/v1/channels/filter")
@api_doc(summary="The Stream channel filter for the caller's role", response_model=schemas.ChannelFilter)
@live_session(scopes=FULL_OR_BREAK_GLASS)
def channel_filter() -> Response:
    return json_response(service.channel_filter(ctx=auth_context(), claims=claims()))


@bp.post("/v1/channels")
@api_doc(summary="Create a channel of a type the caller and every member may use", status=201,
         also={200: "The channel existed (same body)"},
         request_model=schemas.ChannelCreate, response_model=schemas.ChannelRead)
@live_session()
def create_channel() -> Response:
    body = json_body(schemas.ChannelCreate)
    _, caller = live()
    channel, created = service.create_channel(ctx=auth_context(), caller=caller, channel_type=body.type,
                                              members=body.members, name=body.name)
    return json_response(channel, 201 if created else 200)
