"""What Superset does with a database connection, through SQLAlchemy 1.4's postgresql dialect
and psycopg2 (the versions Superset 6 pins): connect, list schemas, tables and views, reflect
columns, keys, indexes and comments, then run a time-grain query. Prints one JSON object.

Usage: python3 sqlalchemy_reflect.py postgresql://user:password@host:port/skystream
"""

import json
import sys

import sqlalchemy as sa


def main(url):
    engine = sa.create_engine(url)
    out = {}
    insp = sa.inspect(engine)
    out["server_version"] = list(engine.dialect.server_version_info)
    out["schemas"] = insp.get_schema_names()
    out["tables"] = insp.get_table_names(schema="lake")
    out["live_tables"] = insp.get_table_names(schema="live")
    out["views"] = insp.get_view_names(schema="lake")
    out["columns"] = [
        [c["name"], str(c["type"]), bool(c["nullable"])]
        for c in insp.get_columns("keyword_counts", schema="lake")
    ]
    out["pk"] = insp.get_pk_constraint("keyword_counts", schema="lake")
    out["fks"] = insp.get_foreign_keys("keyword_counts", schema="lake")
    out["indexes"] = insp.get_indexes("keyword_counts", schema="lake")
    out["unique"] = insp.get_unique_constraints("keyword_counts", schema="lake")
    out["comment"] = insp.get_table_comment("keyword_counts", schema="lake")
    # What Superset's Postgres engine spec adds.
    with engine.connect() as c:
        c.execute(sa.text("set search_path = lake"))
        out["version"] = c.execute(sa.text("select pg_catalog.version()")).scalar()
        out["pid"] = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        out["databases"] = [
            r[0]
            for r in c.execute(
                sa.text("SELECT datname FROM pg_database WHERE datistemplate = false")
            )
        ]
        # A line chart with an hourly time grain, as Superset writes it.
        rows = c.execute(
            sa.text(
                "SELECT DATE_TRUNC('hour', window_end) AS __timestamp, "
                "sum(count) AS \"SUM(count)\" FROM keyword_counts "
                "GROUP BY DATE_TRUNC('hour', window_end) ORDER BY 1 LIMIT 10000"
            )
        ).fetchall()
        out["hourly"] = [[r[0].isoformat(), int(r[1])] for r in rows]
        top = c.execute(
            sa.text(
                "SELECT keyword, sum(count) AS n FROM keyword_counts "
                "WHERE keyword = :kw GROUP BY keyword"
            ),
            {"kw": sys.argv[2]},
        ).fetchall()
        out["param_query"] = [[r[0], int(r[1])] for r in top]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
