-- The internal database and one database per purpose (DESIGN.md §2, §5): each purpose reads
-- only its own database, with its own read-only user, so data minimisation holds in the
-- server's grants and not only in Shukei's code.
CREATE DATABASE IF NOT EXISTS ${db};
CREATE DATABASE IF NOT EXISTS ${db}_support;
CREATE DATABASE IF NOT EXISTS ${db}_service_improvement;
CREATE DATABASE IF NOT EXISTS ${db}_marketing;
CREATE DATABASE IF NOT EXISTS ${db}_follow_up;
CREATE DATABASE IF NOT EXISTS ${db}_interview_selection;
CREATE DATABASE IF NOT EXISTS ${db}_external_aggregate;
CREATE DATABASE IF NOT EXISTS ${db}_external_consented;
