"""intake's composition root: the filing route is served plainly and still documented."""

from fastapi.routing import APIRoute
from starlette.routing import Match, Route

from services.intake.app import create_app


def test_filing_is_served_ahead_of_fastapis_routing_and_still_documented() -> None:
    app = create_app()
    scope = {"type": "http", "method": "POST", "path": "/v1/complaints"}
    first_match = next(r for r in app.router.routes if r.matches(scope)[0] is Match.FULL)
    assert type(first_match) is Route  # a plain Starlette route, not FastAPI's APIRoute
    assert not isinstance(first_match, APIRoute)
    operation = app.openapi()["paths"]["/v1/complaints"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "202" in operation["responses"]
