-- Least privilege (promise 16, schemas/databases): ClickHouse 18.16 grants a user whole
-- databases, so the tables of the internal database move into databases by who may touch
-- them. The event store (events, rejections) stays in ${db}; every role's user is then allowed
-- only the databases of its row in the matrix (users.go). A RENAME whose table has moved
-- already is skipped by the migrator, so a run cut short is finished by the next one.
CREATE DATABASE IF NOT EXISTS ${db}_registry;
CREATE DATABASE IF NOT EXISTS ${db}_keys;
CREATE DATABASE IF NOT EXISTS ${db}_principals;
CREATE DATABASE IF NOT EXISTS ${db}_audit;
CREATE DATABASE IF NOT EXISTS ${db}_aggregator;
CREATE DATABASE IF NOT EXISTS ${db}_breakglass;

RENAME TABLE ${db}.tenants TO ${db}_registry.tenants;
RENAME TABLE ${db}.consents TO ${db}_registry.consents;
RENAME TABLE ${db}.policy_activations TO ${db}_registry.policy_activations;
RENAME TABLE ${db}.deleted_tenants TO ${db}_registry.deleted_tenants;
RENAME TABLE ${db}.tickets TO ${db}_registry.tickets;
RENAME TABLE ${db}.pseudonym_roots TO ${db}_keys.pseudonym_roots;
RENAME TABLE ${db}.principals TO ${db}_principals.principals;
RENAME TABLE ${db}.audit_log TO ${db}_audit.audit_log;
RENAME TABLE ${db}.breakglass TO ${db}_breakglass.breakglass;
RENAME TABLE ${db}.breakglass_actions TO ${db}_breakglass.breakglass_actions;
RENAME TABLE ${db}.aggregate_state TO ${db}_aggregator.aggregate_state;
