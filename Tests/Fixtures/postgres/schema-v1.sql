-- A PostgreSQL store at schema version 1 (unit counters on the spec rows), for the MIG-1 upgrade test.
-- Made with the daemon through the Python client (specs "fixture" with 20 units: 2 finished, 1 failed, 1 pending
-- with a lease until 2100, 16 ready; "other" with 1 unit), then dumped with pg_dump --inserts. The schema name
-- fixture_v1 is replaced by the test's own.
CREATE SCHEMA fixture_v1;
CREATE TABLE fixture_v1.attempt (
    id bigint NOT NULL,
    unit_id bigint NOT NULL,
    spec_id bigint NOT NULL,
    namespace_id bigint NOT NULL,
    worker bytea NOT NULL,
    worker_kind boolean NOT NULL,
    start_time bigint NOT NULL,
    expiration_time bigint NOT NULL,
    end_time bigint,
    status smallint NOT NULL,
    data bytea NOT NULL
);
CREATE SEQUENCE fixture_v1.attempt_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE fixture_v1.attempt_id_seq OWNED BY fixture_v1.attempt.id;
CREATE TABLE fixture_v1.held_lock (
    namespace_id bigint NOT NULL,
    path_key bytea NOT NULL,
    path bytea NOT NULL,
    owner bytea NOT NULL,
    owner_kind boolean NOT NULL,
    deadline bigint NOT NULL
);
CREATE TABLE fixture_v1.namespace (
    id bigint NOT NULL,
    name bytea NOT NULL,
    name_kind boolean NOT NULL,
    generation bigint DEFAULT 0 NOT NULL
);
CREATE SEQUENCE fixture_v1.namespace_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE fixture_v1.namespace_id_seq OWNED BY fixture_v1.namespace.id;
CREATE TABLE fixture_v1.schema_version (
    version integer NOT NULL,
    applied_at bigint NOT NULL
);
CREATE TABLE fixture_v1.work_spec (
    id bigint NOT NULL,
    namespace_id bigint NOT NULL,
    name bytea NOT NULL,
    name_kind boolean NOT NULL,
    data bytea NOT NULL,
    overrides bytea,
    next_continuous bigint,
    archived_finished bigint DEFAULT 0 NOT NULL,
    archived_failed bigint DEFAULT 0 NOT NULL,
    count_ready bigint DEFAULT 0 NOT NULL,
    count_delayed bigint DEFAULT 0 NOT NULL,
    count_pending bigint DEFAULT 0 NOT NULL,
    count_finished bigint DEFAULT 0 NOT NULL,
    count_failed bigint DEFAULT 0 NOT NULL
);
CREATE SEQUENCE fixture_v1.work_spec_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE fixture_v1.work_spec_id_seq OWNED BY fixture_v1.work_spec.id;
CREATE TABLE fixture_v1.work_unit (
    id bigint NOT NULL,
    spec_id bigint NOT NULL,
    key bytea NOT NULL,
    key_kind boolean NOT NULL,
    data bytea NOT NULL,
    priority double precision NOT NULL,
    not_before bigint,
    state smallint NOT NULL,
    bucket smallint NOT NULL,
    "time" bigint,
    latest_attempt_id bigint,
    attempt_count bigint NOT NULL,
    retry_count_base bigint NOT NULL
);
CREATE SEQUENCE fixture_v1.work_unit_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE fixture_v1.work_unit_id_seq OWNED BY fixture_v1.work_unit.id;
CREATE TABLE fixture_v1.worker (
    namespace_id bigint NOT NULL,
    name bytea NOT NULL,
    name_kind boolean NOT NULL,
    active boolean NOT NULL,
    mode bytea NOT NULL,
    data bytea NOT NULL,
    parent bytea,
    parent_kind boolean,
    first_seen bigint NOT NULL,
    last_heartbeat bigint NOT NULL,
    expiration bigint NOT NULL
);
ALTER TABLE ONLY fixture_v1.attempt ALTER COLUMN id SET DEFAULT nextval('fixture_v1.attempt_id_seq'::regclass);
ALTER TABLE ONLY fixture_v1.namespace ALTER COLUMN id SET DEFAULT nextval('fixture_v1.namespace_id_seq'::regclass);
ALTER TABLE ONLY fixture_v1.work_spec ALTER COLUMN id SET DEFAULT nextval('fixture_v1.work_spec_id_seq'::regclass);
ALTER TABLE ONLY fixture_v1.work_unit ALTER COLUMN id SET DEFAULT nextval('fixture_v1.work_unit_id_seq'::regclass);
INSERT INTO fixture_v1.attempt VALUES (4, 4, 1, 1, '\x776f726b65722d31', false, 1795963024502606, 4102444800000000, NULL, 1, '\xa2447465787465636166c3a9416e03');
INSERT INTO fixture_v1.attempt VALUES (1, 1, 1, 1, '\x776f726b65722d31', false, 1795963024489064, 1796049024489064, 1795963024505602, 3, '\xa3447465787465636166c3a946726573756c74426f6b416e00');
INSERT INTO fixture_v1.attempt VALUES (2, 2, 1, 1, '\x776f726b65722d31', false, 1795963024495762, 1796049024495762, 1795963024508671, 3, '\xa2447465787465636166c3a9416e01');
INSERT INTO fixture_v1.attempt VALUES (3, 3, 1, 1, '\x776f726b65722d31', false, 1795963024499418, 1796049024499418, 1795963024511152, 4, '\xa3447465787465636166c3a94974726163656261636b454e6f6e650a416e02');
INSERT INTO fixture_v1.namespace VALUES (1, '\x', true, 2);
INSERT INTO fixture_v1.schema_version VALUES (1, 1795963022316290);
INSERT INTO fixture_v1.work_spec VALUES (1, 1, '\x66697874757265', false, '\xa4487072696f7269747905466d696e5f676201446e616d6547666978747572654677656967687403', NULL, NULL, 0, 0, 16, 0, 1, 2, 1);
INSERT INTO fixture_v1.work_spec VALUES (2, 1, '\x6f74686572', false, '\xa2446e616d65456f74686572466d696e5f676201', NULL, NULL, 0, 0, 1, 0, 0, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (5, 1, '\x756e69742d3034', false, '\xa2447465787465636166c3a9416e04', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (6, 1, '\x756e69742d3035', false, '\xa2447465787465636166c3a9416e05', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (7, 1, '\x756e69742d3036', false, '\xa2447465787465636166c3a9416e06', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (8, 1, '\x756e69742d3037', false, '\xa2447465787465636166c3a9416e07', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (9, 1, '\x756e69742d3038', false, '\xa2447465787465636166c3a9416e08', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (10, 1, '\x756e69742d3039', false, '\xa2447465787465636166c3a9416e09', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (11, 1, '\x756e69742d3130', false, '\xa2447465787465636166c3a9416e0a', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (12, 1, '\x756e69742d3131', false, '\xa2447465787465636166c3a9416e0b', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (13, 1, '\x756e69742d3132', false, '\xa2447465787465636166c3a9416e0c', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (14, 1, '\x756e69742d3133', false, '\xa2447465787465636166c3a9416e0d', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (15, 1, '\x756e69742d3134', false, '\xa2447465787465636166c3a9416e0e', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (16, 1, '\x756e69742d3135', false, '\xa2447465787465636166c3a9416e0f', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (17, 1, '\x756e69742d3136', false, '\xa2447465787465636166c3a9416e10', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (18, 1, '\x756e69742d3137', false, '\xa2447465787465636166c3a9416e11', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (19, 1, '\x756e69742d3138', false, '\xa2447465787465636166c3a9416e12', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (20, 1, '\x756e69742d3139', false, '\xa2447465787465636166c3a9416e13', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (21, 2, '\x61', false, '\xa1416b01', 0, NULL, 1, 0, NULL, NULL, 0, 0);
INSERT INTO fixture_v1.work_unit VALUES (4, 1, '\x756e69742d3033', false, '\xa2447465787465636166c3a9416e03', 0, NULL, 3, 2, 4102444800000000, 4, 1, 0);
INSERT INTO fixture_v1.work_unit VALUES (1, 1, '\x756e69742d3030', false, '\xa3447465787465636166c3a946726573756c74426f6b416e00', 0, NULL, 4, 3, 1795963024505602, 1, 1, 0);
INSERT INTO fixture_v1.work_unit VALUES (2, 1, '\x756e69742d3031', false, '\xa2447465787465636166c3a9416e01', 0, NULL, 4, 3, 1795963024508671, 2, 1, 0);
INSERT INTO fixture_v1.work_unit VALUES (3, 1, '\x756e69742d3032', false, '\xa3447465787465636166c3a94974726163656261636b454e6f6e650a416e02', 0, NULL, 5, 4, 1795963024511152, 3, 1, 0);
SELECT pg_catalog.setval('fixture_v1.attempt_id_seq', 4, true);
SELECT pg_catalog.setval('fixture_v1.namespace_id_seq', 1, true);
SELECT pg_catalog.setval('fixture_v1.work_spec_id_seq', 2, true);
SELECT pg_catalog.setval('fixture_v1.work_unit_id_seq', 21, true);
ALTER TABLE ONLY fixture_v1.attempt
    ADD CONSTRAINT attempt_pkey PRIMARY KEY (id);
ALTER TABLE ONLY fixture_v1.held_lock
    ADD CONSTRAINT held_lock_pkey PRIMARY KEY (namespace_id, path_key);
ALTER TABLE ONLY fixture_v1.namespace
    ADD CONSTRAINT namespace_name_key UNIQUE (name);
ALTER TABLE ONLY fixture_v1.namespace
    ADD CONSTRAINT namespace_pkey PRIMARY KEY (id);
ALTER TABLE ONLY fixture_v1.schema_version
    ADD CONSTRAINT schema_version_pkey PRIMARY KEY (version);
ALTER TABLE ONLY fixture_v1.work_spec
    ADD CONSTRAINT work_spec_namespace_id_name_key UNIQUE (namespace_id, name);
ALTER TABLE ONLY fixture_v1.work_spec
    ADD CONSTRAINT work_spec_pkey PRIMARY KEY (id);
ALTER TABLE ONLY fixture_v1.work_unit
    ADD CONSTRAINT work_unit_pkey PRIMARY KEY (id);
ALTER TABLE ONLY fixture_v1.work_unit
    ADD CONSTRAINT work_unit_spec_id_key_key UNIQUE (spec_id, key);
ALTER TABLE ONLY fixture_v1.worker
    ADD CONSTRAINT worker_pkey PRIMARY KEY (namespace_id, name);
CREATE INDEX attempt_unit ON fixture_v1.attempt USING btree (unit_id, id);
CREATE INDEX attempt_worker ON fixture_v1.attempt USING btree (namespace_id, worker, status);
CREATE INDEX held_lock_deadline ON fixture_v1.held_lock USING btree (deadline);
CREATE INDEX work_unit_completed ON fixture_v1.work_unit USING btree (spec_id, bucket, "time", key);
CREATE INDEX work_unit_deadline ON fixture_v1.work_unit USING btree (bucket, "time") WHERE (bucket = ANY (ARRAY[1, 2]));
CREATE INDEX work_unit_order ON fixture_v1.work_unit USING btree (spec_id, bucket, priority DESC, key);
ALTER TABLE ONLY fixture_v1.attempt
    ADD CONSTRAINT attempt_unit_id_fkey FOREIGN KEY (unit_id) REFERENCES fixture_v1.work_unit(id) ON DELETE CASCADE;
ALTER TABLE ONLY fixture_v1.held_lock
    ADD CONSTRAINT held_lock_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES fixture_v1.namespace(id) ON DELETE CASCADE;
ALTER TABLE ONLY fixture_v1.work_spec
    ADD CONSTRAINT work_spec_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES fixture_v1.namespace(id) ON DELETE CASCADE;
ALTER TABLE ONLY fixture_v1.work_unit
    ADD CONSTRAINT work_unit_spec_id_fkey FOREIGN KEY (spec_id) REFERENCES fixture_v1.work_spec(id) ON DELETE CASCADE;
ALTER TABLE ONLY fixture_v1.worker
    ADD CONSTRAINT worker_namespace_id_fkey FOREIGN KEY (namespace_id) REFERENCES fixture_v1.namespace(id) ON DELETE CASCADE;
