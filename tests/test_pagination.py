"""List pagination (AIP-132, AIP-158): keyset page tokens, order_by, page sizes, skip and total_size.

Every test makes its own parents (a fresh Endpoint for Predictions, a fresh
Dataset for DatasetVersions, a fresh Workflow for Datasets) and filters on the
parent id, so that rows of other tests never show up. Expected orders come from PostgreSQL itself
(``ORDER BY ...``), NULLs and ties included.
"""
from __future__ import annotations

import base64
import datetime
import os
from typing import Any

import pytest

from tests.support import assert_invalid, message, rpc_error

# --------------------------------------------------------------------------- helpers


class Predictions:
    """Predictions under one fresh endpoint; lists filter on that endpoint."""

    def __init__(self, api: Any, model_versions: int = 1) -> None:
        self.api = api
        self.endpoint_id = api.create("Endpoint").id
        self.model_version_ids = [api.create("ModelVersion").id for _ in range(model_versions)]
        self.filter = f'endpoint_id = "{self.endpoint_id}"'

    def add(self, *specs: dict[str, Any]) -> list[Any]:
        """BatchCreate one prediction per spec (fields of Prediction beyond the parents)."""
        requests = []
        for spec in specs:
            fields = {"input": {"x": 1}, "model_version_id": self.model_version_ids[0], **spec}
            requests.append(
                message(
                    "CreatePredictionRequest",
                    prediction=message("Prediction", endpoint_id=self.endpoint_id, **fields),
                )
            )
        created = []
        for start in range(0, len(requests), 1000):
            response = self.api.call(
                "Prediction", "BatchCreatePredictions", requests=requests[start : start + 1000]
            )
            created.extend(response.predictions)
        return created

    def list(self, **fields: Any) -> Any:
        fields.setdefault("filter", self.filter)
        return self.api.call("Prediction", "ListPredictions", **fields)


def varied(count: int, model_versions: int = 1) -> list[dict[str, Any]]:
    """Specs with many ties and NULLs in the sortable columns."""
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    specs = []
    for i in range(count):
        spec: dict[str, Any] = {
            "latency": i % 4,
            "status": 1 + i % 3,
            "model_version_id_index": i % model_versions,
        }
        if i % 3:
            spec["confidence"] = (0.1, 0.5, 0.9)[i % 5 % 3]
        if i % 2:
            spec["error_message"] = f"e{i % 4}"
        if i % 4:
            spec["completed_at"] = base + datetime.timedelta(minutes=i % 3)
        specs.append(spec)
    return specs


def add_varied(predictions: Predictions, count: int) -> list[Any]:
    specs = []
    for spec in varied(count, len(predictions.model_version_ids)):
        spec = dict(spec)
        spec["model_version_id"] = predictions.model_version_ids[spec.pop("model_version_id_index")]
        specs.append(spec)
    return predictions.add(*specs)


def walk(list_page: Any, plural: str, sizes: list[int], **fields: Any) -> list[list[Any]]:
    """Every page of a List until the empty next_page_token; ``sizes`` cycles."""
    pages: list[list[Any]] = []
    token = ""
    for step in range(10_000):
        response = list_page(page_size=sizes[step % len(sizes)], page_token=token, **fields)
        pages.append(list(getattr(response, plural)))
        token = response.next_page_token
        if not token:
            return pages
    raise AssertionError("the list never ended")


def ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def flat(pages: list[list[Any]]) -> list[str]:
    return [item.id for page in pages for item in page]


def postgres_order(rows: Any, table: str, parent_column: str, parent_id: str, order: str) -> list[str]:
    cursor = rows.database.execute_sql(
        f"SELECT id FROM {table} WHERE {parent_column} = %s ORDER BY {order}", (parent_id,)
    )
    return [str(row[0]) for row in cursor.fetchall()]


def first_token(predictions: Predictions, **fields: Any) -> str:
    token = predictions.list(page_size=2, **fields).next_page_token
    assert token
    return token


# --------------------------------------------------------------------------- page walks


# order_by as sent -> the same order in SQL (id is always the final tie breaker).
ORDERS = [
    ("created_at", "created_at, id"),
    ("created_at desc", "created_at DESC, id"),
    ("created_at desc, id desc", "created_at DESC, id DESC"),
    ("id", "id"),
    ("id desc", "id DESC"),
    ("latency", "latency, id"),
    ("latency desc", "latency DESC, id"),
    ("latency, created_at desc", "latency, created_at DESC, id"),
    ("latency DESC, created_at", "latency DESC, created_at, id"),
    ("confidence", "confidence, id"),
    ("confidence desc", "confidence DESC, id"),
    ("confidence desc, latency", "confidence DESC, latency, id"),
    ("confidence, latency desc", "confidence, latency DESC, id"),
    ("status, completed_at desc", "status, completed_at DESC, id"),
    ("completed_at, confidence desc", "completed_at, confidence DESC, id"),
    ("error_message desc, confidence", "error_message DESC, confidence, id"),
    ("model_version_id, latency desc", "model_version_id, latency DESC, id"),
]


@pytest.mark.parametrize("order_by, sql", ORDERS, ids=[o for o, _ in ORDERS])
def test_walk_every_row_once_in_postgres_order(api, rows, order_by, sql):
    predictions = Predictions(api, model_versions=3)
    created = add_varied(predictions, 25)

    pages = walk(predictions.list, "predictions", [7], order_by=order_by)

    assert [len(page) for page in pages] == [7, 7, 7, 4]
    expected = postgres_order(rows, "predictions", "endpoint_id", predictions.endpoint_id, sql)
    assert sorted(expected) == sorted(ids(created))
    assert flat(pages) == expected


def test_walk_default_order_returns_every_row_once(api):
    predictions = Predictions(api)
    created = add_varied(predictions, 25)

    pages = walk(predictions.list, "predictions", [7])

    assert [len(page) for page in pages] == [7, 7, 7, 4]
    assert sorted(flat(pages)) == sorted(ids(created))


def test_walk_nulls_sort_last_ascending_and_first_descending(api):
    predictions = Predictions(api)
    with_value = predictions.add(*({"confidence": c} for c in (0.3, 0.1, 0.2)))
    without = predictions.add({}, {})  # confidence unset: NULL

    ascending = flat(walk(predictions.list, "predictions", [2], order_by="confidence"))
    descending = flat(walk(predictions.list, "predictions", [2], order_by="confidence desc"))

    by_value = [with_value[1].id, with_value[2].id, with_value[0].id]
    nulls = sorted(ids(without))  # ties broken by id
    assert ascending == by_value + nulls
    assert descending == nulls + by_value[::-1]


def test_walk_dataset_versions_by_version(api):
    dataset = api.create("Dataset")
    requests = [
        message("CreateDatasetVersionRequest", dataset_version=api.sample("DatasetVersion", dataset_id=dataset.id))
        for _ in range(25)
    ]
    api.call("DatasetVersion", "BatchCreateDatasetVersions", requests=requests)
    list_page = lambda **f: api.call("DatasetVersion", "ListDatasetVersions", **f)  # noqa: E731
    scope = f'dataset_id = "{dataset.id}"'

    descending = walk(list_page, "dataset_versions", [7], filter=scope, order_by="version desc")
    ascending = walk(list_page, "dataset_versions", [7], filter=scope, order_by="version")

    assert [[v.version for v in page] for page in descending] == [
        list(range(25, 18, -1)),
        list(range(18, 11, -1)),
        list(range(11, 4, -1)),
        [4, 3, 2, 1],
    ]
    assert [v.version for page in ascending for v in page] == list(range(1, 26))


def test_page_size_may_change_between_pages(api, rows):
    predictions = Predictions(api)
    add_varied(predictions, 25)

    pages = walk(predictions.list, "predictions", [3, 10, 1, 6, 1000], order_by="latency desc")

    assert [len(page) for page in pages] == [3, 10, 1, 6, 5]
    expected = postgres_order(rows, "predictions", "endpoint_id", predictions.endpoint_id, "latency DESC, id")
    assert flat(pages) == expected


def test_same_token_twice_gives_the_same_page(api):
    predictions = Predictions(api)
    add_varied(predictions, 10)
    token = first_token(predictions, order_by="confidence desc")

    first = predictions.list(page_size=3, page_token=token, order_by="confidence desc")
    again = predictions.list(page_size=3, page_token=token, order_by="confidence desc")

    assert ids(first.predictions) == ids(again.predictions)
    assert first.next_page_token == again.next_page_token


# --------------------------------------------------------------------------- changes between pages


@pytest.mark.parametrize("order_by", ["latency", "latency, created_at desc", "latency desc"])
def test_rows_inserted_between_pages_cause_no_duplicates_or_gaps(api, order_by):
    predictions = Predictions(api)
    existing = predictions.add(*({"latency": 10 * (i + 1)} for i in range(20)))  # 10..200
    descending = order_by.startswith("latency desc")
    ordered = existing[::-1] if descending else existing

    first = predictions.list(page_size=7, order_by=order_by)
    assert ids(first.predictions) == ids(ordered[:7])
    cursor_latency = first.predictions[-1].latency  # 70 ascending, 140 descending

    # Rows sorting before the cursor (already passed) and after it (still to come).
    before = [5, 65] if not descending else [500, 145]
    after = [75, 500] if not descending else [135, 5]
    passed = predictions.add(*({"latency": v} for v in before))
    coming = predictions.add(*({"latency": v} for v in after))
    predictions.add({"latency": cursor_latency})  # a tie with the cursor row: either side, by id

    seen = ids(first.predictions)
    token = first.next_page_token
    while token:
        page = predictions.list(page_size=7, page_token=token, order_by=order_by)
        seen += ids(page.predictions)
        token = page.next_page_token

    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert [i for i in seen if i in set(ids(existing))] == ids(ordered), "an existing row was lost or moved"
    assert not set(ids(passed)) & set(seen), "a row inserted before the cursor was returned"
    assert set(ids(coming)) <= set(seen), "a row inserted after the cursor was not returned"


def test_rows_deleted_between_pages_cause_no_gaps(api):
    predictions = Predictions(api)
    existing = predictions.add(*({"latency": i} for i in range(12)))

    first = predictions.list(page_size=5, order_by="latency")
    # Delete the cursor row itself and one row of the next page.
    api.call("Prediction", "DeletePrediction", id=existing[4].id)
    api.call("Prediction", "DeletePrediction", id=existing[6].id)
    second = predictions.list(page_size=5, page_token=first.next_page_token, order_by="latency")

    assert ids(first.predictions) == ids(existing[:5])
    assert ids(second.predictions) == ids([existing[5], *existing[7:11]])


def test_rows_inserted_at_the_front_of_created_at_desc_are_not_returned(api):
    predictions = Predictions(api)
    existing = predictions.add(*({"latency": i} for i in range(15)))
    newest_first = sorted(existing, key=lambda p: (p.created_at.ToDatetime(), p.id), reverse=True)

    first = predictions.list(page_size=7, order_by="created_at desc, id desc")
    fresh = predictions.add({"latency": 99}, {"latency": 98})
    seen = ids(first.predictions)
    token = first.next_page_token
    while token:
        page = predictions.list(page_size=7, page_token=token, order_by="created_at desc, id desc")
        seen += ids(page.predictions)
        token = page.next_page_token

    assert seen == ids(newest_first)
    assert not set(ids(fresh)) & set(seen)


# --------------------------------------------------------------------------- page sizes and the end


@pytest.fixture(scope="module")
def thousand(api):
    """1005 predictions under one endpoint (read only: shared by the page-size tests)."""
    predictions = Predictions(api)
    predictions.add(*({"latency": i % 50} for i in range(1005)))
    return predictions


@pytest.mark.parametrize(
    "requested, served",
    [(0, 50), (1, 1), (999, 999), (1000, 1000), (1001, 1000), (5000, 1000), (2**31 - 1, 1000)],
)
def test_page_size_default_and_clamp(thousand, requested, served):
    response = thousand.list(page_size=requested)

    assert len(response.predictions) == served
    assert response.next_page_token
    rest = thousand.list(page_size=1000, page_token=response.next_page_token)
    assert len(response.predictions) + len(rest.predictions) == min(1005, served + 1000)


def test_clamped_walk_covers_every_row(thousand):
    pages = walk(thousand.list, "predictions", [5000], order_by="latency desc")

    assert [len(page) for page in pages] == [1000, 5]
    assert len(set(flat(pages))) == 1005


@pytest.mark.parametrize("size", [-1, -50, -(2**31)])
def test_negative_page_size_is_invalid(api, size):
    predictions = Predictions(api)
    predictions.add({})

    assert_invalid(rpc_error(predictions.list, page_size=size), "page_size")


@pytest.mark.parametrize("count, size, lengths", [(21, 7, [7, 7, 7]), (7, 7, [7]), (1, 7, [1]), (8, 7, [7, 1])])
def test_empty_token_exactly_at_the_end(api, count, size, lengths):
    predictions = Predictions(api)
    predictions.add(*({"latency": i} for i in range(count)))

    responses = []
    token = ""
    while True:
        response = predictions.list(page_size=size, page_token=token)
        responses.append(response)
        token = response.next_page_token
        if not token:
            break
        assert len(responses) <= len(lengths)

    assert [len(r.predictions) for r in responses] == lengths
    assert all(r.next_page_token for r in responses[:-1])
    assert responses[-1].next_page_token == ""


def test_empty_list_has_no_token(api):
    predictions = Predictions(api)

    response = predictions.list(page_size=7)

    assert list(response.predictions) == []
    assert response.next_page_token == ""


# --------------------------------------------------------------------------- forged and misused tokens


def _flip(token: str, position: int) -> str:
    char = token[position]
    return token[:position] + ("A" if char != "A" else "B") + token[position + 1 :]


TAMPERINGS = {
    "flip first char": lambda t: _flip(t, 0),
    "flip middle char": lambda t: _flip(t, len(t) // 2),
    "flip a signature char": lambda t: _flip(t, len(t) - 6),
    "truncate one char": lambda t: t[:-1],
    "truncate four chars": lambda t: t[:-4],
    "truncate to half": lambda t: t[: len(t) // 2],
    "append chars": lambda t: t + "AAAA",
    "random base64": lambda t: base64.urlsafe_b64encode(os.urandom(60)).decode().rstrip("="),
    "short random base64": lambda t: base64.urlsafe_b64encode(os.urandom(8)).decode(),
    "not base64": lambda t: "!!! not a token !!!",
    "non ascii": lambda t: "é" + t,
    "forged json": lambda t: base64.urlsafe_b64encode(b'{"b":"x","v":[1]}' + b"\0" * 16).decode(),
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS.values()), ids=list(TAMPERINGS))
def test_tampered_token_is_invalid(api, tamper):
    predictions = Predictions(api)
    predictions.add(*({"latency": i} for i in range(5)))
    token = first_token(predictions, order_by="latency")
    forged = tamper(token)

    error = rpc_error(predictions.list, page_size=2, page_token=forged, order_by="latency")

    assert_invalid(error, "page_token")
    # The genuine token still works afterwards.
    assert len(predictions.list(page_size=2, page_token=token, order_by="latency").predictions) == 2


def test_token_from_another_resource_list_is_invalid(api):
    dataset = api.create("Dataset")
    for _ in range(3):
        api.create("DatasetVersion", dataset_id=dataset.id)
    foreign = api.call(
        "DatasetVersion", "ListDatasetVersions", page_size=1, filter=f'dataset_id = "{dataset.id}"'
    ).next_page_token
    assert foreign
    predictions = Predictions(api)
    predictions.add({}, {}, {})

    error = rpc_error(predictions.list, page_size=1, page_token=foreign)

    assert_invalid(error, "page_token")


@pytest.mark.parametrize(
    "issued, reused",
    [
        ({"order_by": "latency"}, {"order_by": "latency desc"}),
        ({"order_by": "latency"}, {"order_by": "confidence"}),
        ({"order_by": "latency"}, {"order_by": "latency, created_at"}),
        ({"order_by": "latency"}, {"order_by": ""}),
        ({"order_by": "latency"}, {"order_by": "latency", "filter_suffix": " AND latency = 1"}),
        ({"order_by": "latency"}, {"order_by": "latency", "filter": ""}),
        ({"order_by": "latency", "filter_suffix": " AND status = PENDING"}, {"order_by": "latency"}),
    ],
)
def test_token_reused_with_other_filter_or_order_by_is_invalid(api, issued, reused):
    predictions = Predictions(api)
    predictions.add(*({"latency": i % 2} for i in range(6)))

    def request(spec: dict[str, Any]) -> dict[str, Any]:
        spec = dict(spec)
        suffix = spec.pop("filter_suffix", "")
        spec.setdefault("filter", predictions.filter + suffix)
        return spec

    token = predictions.list(page_size=2, **request(issued)).next_page_token
    assert token

    error = rpc_error(predictions.list, page_size=2, page_token=token, **request(reused))

    assert_invalid(error, "page_token")


def test_token_from_another_parent_filter_is_invalid(api):
    one, other = Predictions(api), Predictions(api)
    one.add({}, {}, {})
    other.add({}, {}, {})
    token = first_token(one)

    assert_invalid(rpc_error(other.list, page_size=2, page_token=token), "page_token")


# --------------------------------------------------------------------------- bad order_by


@pytest.mark.parametrize(
    "order_by",
    [
        "nonexistent",
        "latency sideways",
        "latency asc desc",
        "desc",
        "latency, latency",
        "latency, latency desc",
        "input",  # JSON
        "output desc",  # JSON
        "embedding",  # vector
        "endpoint",  # the relation, not its id field
        "id, nonexistent",
        "id, id",
        "latency; DROP TABLE predictions",
    ],
)
def test_bad_order_by_is_invalid(api, order_by):
    predictions = Predictions(api)
    predictions.add({})

    assert_invalid(rpc_error(predictions.list, order_by=order_by), "order_by")


# --------------------------------------------------------------------------- skip, total_size, read_mask


def test_skip_skips_rows_after_the_token_position(api, rows):
    predictions = Predictions(api)
    add_varied(predictions, 25)
    order = postgres_order(rows, "predictions", "endpoint_id", predictions.endpoint_id, "latency, id")

    first = predictions.list(page_size=5, skip=3, order_by="latency")
    second = predictions.list(page_size=5, page_token=first.next_page_token, order_by="latency")
    third = predictions.list(page_size=5, page_token=second.next_page_token, skip=10, order_by="latency")

    assert ids(first.predictions) == order[3:8]
    assert ids(second.predictions) == order[8:13]
    assert ids(third.predictions) == order[23:25]
    assert third.next_page_token == ""


def test_skip_past_the_end_gives_an_empty_last_page(api):
    predictions = Predictions(api)
    predictions.add({}, {}, {})

    response = predictions.list(page_size=5, skip=3)

    assert list(response.predictions) == [] and response.next_page_token == ""


def test_negative_skip_is_invalid(api):
    predictions = Predictions(api)

    assert_invalid(rpc_error(predictions.list, skip=-1), "skip")


def test_total_size_only_when_asked(api):
    predictions = Predictions(api)
    add_varied(predictions, 12)

    without = predictions.list(page_size=5)
    first = predictions.list(page_size=5, show_total_size=True)
    later = predictions.list(page_size=5, page_token=first.next_page_token, skip=2, show_total_size=True)
    narrowed = predictions.list(page_size=5, filter=predictions.filter + " AND latency = 1", show_total_size=True)

    assert without.total_size == 0
    assert first.total_size == 12
    assert later.total_size == 12
    assert narrowed.total_size == 3


def test_walk_with_a_read_mask_matches_the_full_walk(api):
    predictions = Predictions(api)
    add_varied(predictions, 20)

    full = walk(predictions.list, "predictions", [6], order_by="confidence desc, latency")
    masked = walk(
        predictions.list, "predictions", [6], order_by="confidence desc, latency", read_mask={"paths": ["id"]}
    )

    assert flat(masked) == flat(full)
    assert all(not item.HasField("confidence") and item.latency == 0 for page in masked for item in page)


# --------------------------------------------------------------------------- skip and total_size of a Dataset list


@pytest.fixture(scope="module")
def seven(api: Any) -> tuple[str, list[str]]:
    workflow = api.create("Workflow")
    made = [api.create("Dataset", workflow_id=workflow.id, name=f"d{i}", size=i).id for i in range(7)]
    return f'workflow_id = "{workflow.id}"', made


def dataset_page(api: Any, scope: str, **fields: Any) -> Any:
    return api.call("Dataset", "ListDatasets", filter=scope, order_by="size", **fields)


@pytest.mark.parametrize(
    "page_size, skip, first, second",
    [
        (2, 0, [0, 1], [2, 3]),
        (2, 1, [1, 2], [4, 5]),  # the second skip counts from after the first page
        (3, 2, [2, 3, 4], []),
        (2, 6, [6], None),
        (2, 7, [], None),
        (2, 100, [], None),
    ],
)
def test_skip(api: Any, seven: tuple[str, list[str]], page_size: int, skip: int, first: list[int], second: list[int] | None) -> None:
    scope, made = seven
    response = dataset_page(api, scope, page_size=page_size, skip=skip)
    assert ids(response.datasets) == [made[i] for i in first]
    if second is None:
        assert response.next_page_token == ""
        return
    following = dataset_page(api, scope, page_size=page_size, skip=skip, page_token=response.next_page_token)
    assert ids(following.datasets) == [made[i] for i in second]


def test_negative_skip_of_a_filtered_dataset_list_is_invalid(api: Any, seven: tuple[str, list[str]]) -> None:
    assert_invalid(rpc_error(dataset_page, api, seven[0], skip=-1), "skip")


@pytest.mark.parametrize(
    "extra, expected",
    [("", 7), (" AND size >= 3", 4), (" AND size > 100", 0), (' AND name = "d*"', 7), (" AND NOT (size = 2)", 6)],
)
def test_total_size_counts_every_matching_row(api: Any, seven: tuple[str, list[str]], extra: str, expected: int) -> None:
    scope = seven[0] + extra
    first = dataset_page(api, scope, page_size=2, show_total_size=True)
    assert first.total_size == expected
    if first.next_page_token:
        later = dataset_page(api, scope, page_size=2, show_total_size=True, page_token=first.next_page_token, skip=1)
        assert later.total_size == expected
    assert dataset_page(api, scope, page_size=2).total_size == 0  # not asked for
    assert dataset_page(api, scope, page_size=1000, skip=3, show_total_size=True).total_size == expected
