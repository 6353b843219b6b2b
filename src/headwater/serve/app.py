"""The read API: ``/api/v1/datasets``, their rows, and a row by key.

FastAPI serves the OpenAPI document at ``/api/v1/openapi.json``. Handlers are
plain functions, so FastAPI runs them in its thread pool and a slow query never
holds up the event loop that also takes events.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.csv
import pyarrow.ipc
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlglot import exp
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from headwater.core import jsonio
from headwater.core.errors import HeadwaterError
from headwater.serve.auth import Consumer, ConsumerRing
from headwater.serve.catalog import DatasetCatalog
from headwater.serve.errors import ApiError
from headwater.serve.query import (
    RESERVED,
    Dataset,
    Reader,
    Select,
    encode_cursor,
    parse_value,
    rows_query,
    served,
)
from headwater.serve.settings import ApiSettings
from headwater.store.errors import QueryError
from headwater.store.schema import rebuilt, type_name

log = logging.getLogger(__name__)

ARROW = "application/vnd.apache.arrow.stream"


def api_app(consumers: ConsumerRing, catalog: DatasetCatalog, settings: ApiSettings) -> FastAPI:
    """The FastAPI app of the read API."""
    app = FastAPI(
        title="Headwater read API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.code, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return _error(400, "bad_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def routing(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # A path or method the API does not have: its answer in the API's one shape.
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(error.status_code, "bad_request")
        answer = _error(
            error.status_code, code, f"{request.method} {request.url.path}: {error.detail}"
        )
        for name, value in (error.headers or {}).items():
            answer.headers[name] = value
        return answer

    @app.exception_handler(HeadwaterError)
    async def failed(request: Request, error: HeadwaterError) -> JSONResponse:
        # The engine's words stay in the server's log, not in a client's answer.
        log.error("read API: %s", error)
        return _error(503, "unavailable", "the store could not answer; try again shortly")

    # Before routing and parameter checks: a caller without a token learns nothing.
    app.add_middleware(_Authenticate, consumers=consumers)

    def granted(authorization: str | None, name: str) -> tuple[Consumer, Dataset]:
        consumer = consumers.consumer(authorization)
        # The grant first, and the same answer whether the name exists or not: a consumer
        # learns nothing of datasets it may not read, not even that they exist or ran.
        if name not in consumer.datasets:
            raise ApiError(403, "not_granted", f"consumer {consumer.name} may not read {name}")
        dataset = catalog.get(name)
        if dataset is None:
            if catalog.declared(name):
                raise ApiError(
                    404,
                    "not_computed",
                    f"{name} has not been computed yet: its first interval has not run "
                    "(`headwater status` shows its next run)",
                )
            raise ApiError(404, "unknown_dataset", f"there is no dataset {name!r}")
        return consumer, dataset

    @app.get("/api/v1/datasets", summary="The datasets this consumer may read, with schemas")
    def datasets(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        consumer = consumers.consumer(authorization)
        listed = []
        for name in sorted(consumer.datasets):
            dataset = catalog.get(name)
            if dataset is not None:
                listed.append(
                    {
                        "name": name,
                        "key": list(dataset.key),
                        "columns": [
                            {"name": f.name, "type": type_name(f.type)} for f in dataset.schema
                        ],
                    }
                )
        return {"datasets": listed}

    @app.get(
        "/api/v1/datasets/{name}/rows",
        summary="Rows of a dataset: filters as column=value, column__in, __gt, __gte, __lt, __lte",
    )
    def rows(
        name: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        order_by: Annotated[str | None, Query(description="columns, '-' for descending")] = None,
        # Text here: a limit out of range is refused as bad_limit by the query, not by
        # the framework's own validation in another shape.
        limit: Annotated[str | None, Query(description="rows per page, 1 to the maximum")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the page before")] = None,
        format: Annotated[Literal["json", "csv", "arrow"], Query()] = "json",
    ) -> Response:
        _, dataset = granted(authorization, name)
        args = dict(request.query_params)
        if len(args) < len(request.query_params.multi_items()):
            twice = next(k for k in args if len(request.query_params.getlist(k)) > 1)
            column = twice.partition("__")[0]
            several = (
                ""
                if twice in RESERVED
                else f" (for any of several values of a column: {column}__in=a,b)"
            )
            raise ApiError(
                400,
                "bad_filter",
                f"{twice} is given more than once; give it once{several}",
            )
        select, order, page = rows_query(
            dataset, args, page_size=settings.page_size, max_page_size=settings.max_page_size
        )
        try:
            table = _run(dataset.reader, select)
        except QueryError as exc:
            if not select.params:
                raise
            # With values bound, the likeliest cause is a filter the column cannot take
            # (a JSON column of a pipeline's compared to text).
            log.info("read API: %s refused a filter: %s", name, exc.reason)
            filtered = ", ".join(sorted({arg.partition("__")[0] for arg in args} - RESERVED))
            said = (exc.reason or "refused").splitlines()[0]
            raise ApiError(
                400,
                "bad_filter",
                f"the store cannot compare {filtered} with the values given ({said}); drop "
                "the filter on a column whose values are not plain text, numbers or times",
            ) from None
        more = table.num_rows > page
        table = table.slice(0, page)
        next_cursor = None
        if more:
            next_cursor = encode_cursor(table.slice(page - 1, 1).to_pylist()[0], order)
        return _answer(table, format, next_cursor)

    @app.get("/api/v1/datasets/{name}/rows/{key:path}", summary="One row by the dataset's key")
    def row(
        name: str,
        key: str,
        authorization: Annotated[str | None, Header()] = None,
        format: Annotated[Literal["json", "csv", "arrow"], Query()] = "json",
    ) -> Response:
        _, dataset = granted(authorization, name)
        if len(dataset.key) != 1:
            raise ApiError(
                400,
                "no_single_key",
                f"{name} has key {list(dataset.key) or 'none'}; filter rows by its columns",
            )
        column = dataset.key[0]
        value = parse_value(dataset, column, key)
        reader = dataset.reader
        text = _lookup_sql(dataset.relation(), dataset.scored, column, reader.dialect)
        table = reader.select(text, {"p0": value}).table
        if table.num_rows == 0:
            raise ApiError(404, "no_such_row", f"{name} has no row with {column} = {key!r}")
        if format == "json":
            return _json({"row": table.to_pylist()[0]})
        return _answer(table, format, None)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the errors this API really gives (400, not 422)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, meaning in _ERRORS.items():
                responses[status] = {
                    "description": meaning,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    app.openapi_schema = schema
    return schema


_ERRORS = {
    "400": "a bad filter, order, limit or cursor",
    "401": "no token, or not a consumer's",
    "403": "the dataset is not granted to this consumer (whether it exists or not)",
    "404": "a granted dataset that does not exist or is not computed yet, or no such row",
    "503": "the store could not answer",
}
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


class _Authenticate:
    """Refuses a request under ``/api/v1/datasets`` without a consumer's token, before
    FastAPI routes it; plain ASGI, as every request passes through it."""

    def __init__(self, app: ASGIApp, consumers: ConsumerRing) -> None:
        self.app = app
        self.consumers = consumers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/v1/datasets"):
            authorization = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                self.consumers.consumer(authorization)
            except ApiError as error:
                await _error(error.status, error.code, str(error))(scope, receive, send)
                return
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=1024)
def _lookup_sql(relation: exp.Table, scored: bool, column: str, dialect: str) -> str:
    """A row by its key, ``$p0``: built once per dataset, column and dialect."""
    select = Select(served(relation, scored=scored))
    value = select.bind(None)
    query = select.query.where(exp.EQ(this=exp.column(column, quoted=True), expression=value))
    return query.limit(1).sql(dialect)


def _run(reader: Reader, select: Select) -> pa.Table:
    return reader.select(select.query.sql(reader.dialect), select.params).table


def _answer(table: pa.Table, fmt: str, next_cursor: str | None) -> Response:
    headers = {"x-next-cursor": next_cursor} if next_cursor else {}
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        try:
            pa.csv.write_csv(table, sink)
        except pa.ArrowInvalid:
            raise ApiError(
                400,
                "no_csv",
                "this dataset has nested columns, which CSV cannot hold; "
                "ask for format=json or format=arrow",
            ) from None
        return Response(sink.getvalue().to_pybytes(), media_type="text/csv", headers=headers)
    if fmt == "arrow":
        # Lists' items named as the catalog lists them (DuckDB calls them "l").
        named = pa.schema([f.with_type(rebuilt(f.type, lambda leaf: leaf)) for f in table.schema])
        if str(named) != str(table.schema):  # equal as types: Arrow ignores the names
            table = table.cast(named)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW, headers=headers)
    return _json({"rows": table.to_pylist(), "next_cursor": next_cursor}, headers)


def _json(body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(body), media_type="application/json", headers=headers)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
