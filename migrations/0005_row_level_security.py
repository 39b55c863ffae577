"""Row-level security: a prediction is visible only to the principal that created it, or to an admin.

The service runs each RPC as one of two database roles, neither of them a
superuser nor allowed to bypass RLS (``server.ops.database``: ``SET ROLE`` when the
pool hands out a connection, with the caller's principal in the session setting
``versatil.principal``):

* ``versatil_app`` for readers and writers: the policy on ``predictions`` shows
  and accepts only rows whose ``created_by`` is the caller's principal; no
  policy gives it the hourly rollup, which sums every principal's predictions.
* ``versatil_admin`` for admins: it sees every row, through policies that show
  every row (and it bypasses RLS outright when the migrating role is a superuser
  that may grant that: PostgreSQL then keeps the keys in foreign key errors).

Migrations, backups and other maintenance keep running as the connecting role
(the table owner or a superuser), which RLS does not restrict. The roles are
cluster-wide and may exist already (another database of the cluster made them);
the connecting role is made a member of both so that it may ``SET ROLE``. The
rollup triggers run as their owner (``SECURITY DEFINER``), so that a
``versatil_app`` write still keeps every principal's totals exact.
"""

ROLLUP_FUNCTIONS = (
    "prediction_rollups_after_insert",
    "prediction_rollups_after_update",
    "prediction_rollups_after_delete",
    "prediction_rollups_after_truncate",
)
PRINCIPAL = "NULLIF(current_setting('versatil.principal', true), '')"

CREATE_ROLES = """
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['versatil_app', 'versatil_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
            EXECUTE format('CREATE ROLE %%I NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT', name);
        END IF;
        -- Admin calls see every row anyway; a role that bypasses RLS also keeps the keys in
        -- PostgreSQL's foreign key errors, which it hides from roles RLS applies to. Only a
        -- superuser may grant that; otherwise the admin policies below show admins every row.
        IF name = 'versatil_admin' AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('ALTER ROLE %%I BYPASSRLS', name);
        END IF;
        IF NOT pg_has_role(current_user, name, 'MEMBER') THEN
            EXECUTE format('GRANT %%I TO %%I', name, current_user);
        END IF;
    END LOOP;
END $$;
"""

GRANTS = """
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %%I TO versatil_app, versatil_admin', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %%I TO versatil_app, versatil_admin',
                   current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %%I TO versatil_app, versatil_admin',
                   current_schema());
    -- Tables of later migrations, made by this same role, are granted too.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %%I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES '
                   'TO versatil_app, versatil_admin', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %%I GRANT USAGE, SELECT ON SEQUENCES '
                   'TO versatil_app, versatil_admin', current_schema());
END $$;
REVOKE ALL ON schema_migration FROM versatil_app, versatil_admin;
"""

POLICIES = f"""
ALTER TABLE predictions ENABLE ROW LEVEL SECURITY;
CREATE POLICY predictions_of_the_caller ON predictions TO versatil_app
    USING (created_by = {PRINCIPAL}) WITH CHECK (created_by = {PRINCIPAL});
CREATE POLICY predictions_of_everyone ON predictions TO versatil_admin USING (true) WITH CHECK (true);
ALTER TABLE prediction_hourly_rollups ENABLE ROW LEVEL SECURITY;
CREATE POLICY rollups_of_everyone ON prediction_hourly_rollups TO versatil_admin USING (true) WITH CHECK (true);
""" + "".join(
    f"ALTER FUNCTION {name}() SECURITY DEFINER SET search_path FROM CURRENT;\n" for name in ROLLUP_FUNCTIONS
)

DOWN = """
DROP POLICY predictions_of_the_caller ON predictions;
DROP POLICY predictions_of_everyone ON predictions;
ALTER TABLE predictions DISABLE ROW LEVEL SECURITY;
DROP POLICY rollups_of_everyone ON prediction_hourly_rollups;
ALTER TABLE prediction_hourly_rollups DISABLE ROW LEVEL SECURITY;
""" + "".join(
    f"ALTER FUNCTION {name}() SECURITY INVOKER RESET search_path;\n" for name in ROLLUP_FUNCTIONS
) + """
DO $$
BEGIN
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %%I REVOKE ALL ON TABLES FROM versatil_app, versatil_admin',
                   current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %%I REVOKE ALL ON SEQUENCES FROM versatil_app, versatil_admin',
                   current_schema());
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %%I FROM versatil_app, versatil_admin', current_schema());
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %%I FROM versatil_app, versatil_admin', current_schema());
    EXECUTE format('REVOKE ALL ON SCHEMA %%I FROM versatil_app, versatil_admin', current_schema());
    BEGIN
        -- Other databases of the cluster may still grant the roles something: then they stay.
        DROP ROLE versatil_app, versatil_admin;
    EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
        RAISE NOTICE 'roles versatil_app and versatil_admin kept: %%', SQLERRM;
    END;
END $$;
"""


def up(migrator, db):
    db.execute_sql(CREATE_ROLES)
    db.execute_sql(GRANTS)
    db.execute_sql(POLICIES)


def down(migrator, db):
    db.execute_sql(DOWN)
