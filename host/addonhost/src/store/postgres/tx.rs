//! A PostgreSQL transaction seen as a [`Tx`]: each method one or a few
//! statements, with the locks ([`super::locks`]) taken before what they
//! protect is read, and writes whose answer is not needed held back to go
//! out with the next statement.

use std::collections::{BTreeMap, HashMap};

use super::cache::{Key, Val};
use super::locks::{self, Space};
use super::rows::{app_row, resource_row, var_row, RESOURCE_COLUMNS};
use super::session::{params, PgTx};
use super::{kv, osb, outbox, tokens};
use crate::store::{
    Ahead, App, Attachment, AuditEntry, ConfigVar, NewResource, NewSession, OsbBinding,
    OsbInstance, OutboxEntry, Release, Resource, ResourceState, ServerRow, Tx,
};
use crate::util::unix_now;

fn resource(v: &Val) -> Option<Option<Resource>> {
    match v {
        Val::Resource(r) => Some(r.as_deref().cloned()),
        _ => None,
    }
}

impl Tx for PgTx {
    fn read_ahead(&self, reads: &[Ahead<'_>]) -> anyhow::Result<()> {
        self.read_ahead_all(reads)
    }
    fn insert_app(&self, name: &str, region: &str) -> anyhow::Result<i64> {
        let rows = self.query(
            "INSERT INTO apps (name, region, created_at) VALUES ($1, $2, $3) RETURNING id",
            params![name.to_string(), region.to_string(), unix_now()],
        )?;
        let id: i64 = rows[0].try_get(0)?;
        // A new row: nobody else can see it before this transaction ends.
        self.lock_app(id);
        self.cache.borrow_mut().forget(|k| matches!(k, Key::App(_)));
        Ok(id)
    }
    fn app_by_name(&self, name: &str) -> anyhow::Result<Option<App>> {
        self.read_one(Ahead::App(name), |v| match v {
            Val::App(a) => Some(a.clone()),
            _ => None,
        })
    }
    fn list_apps(&self) -> anyhow::Result<Vec<App>> {
        self.all(
            "SELECT id, name, region, created_at FROM apps ORDER BY name",
            params![],
            app_row,
        )
    }
    fn delete_app(&self, app_id: i64) -> anyhow::Result<()> {
        self.lock_app(app_id);
        for sql in [
            "DELETE FROM config_vars WHERE app_id = $1",
            "DELETE FROM releases WHERE app_id = $1",
            "DELETE FROM var_takeovers WHERE attachment_id IN (SELECT id FROM attachments WHERE app_id = $1
                 OR resource_id IN (SELECT id FROM resources WHERE app_id = $1))",
            "DELETE FROM attachments WHERE app_id = $1",
            "DELETE FROM attachments WHERE resource_id IN (SELECT id FROM resources WHERE app_id = $1)",
            // The broker's names for the app's resources go with them.
            "DELETE FROM osb_bindings WHERE instance_id IN (SELECT instance_id FROM osb_instances
                 WHERE resource_uuid IN (SELECT uuid FROM resources WHERE app_id = $1))",
            "DELETE FROM osb_instances WHERE resource_uuid IN (SELECT uuid FROM resources WHERE app_id = $1)",
            "DELETE FROM resources WHERE app_id = $1",
            "DELETE FROM apps WHERE id = $1",
        ] {
            self.defer(sql, params![app_id]);
        }
        self.cache.borrow_mut().clear();
        Ok(())
    }
    fn insert_release(&self, app_id: i64, description: &str, actor: &str) -> anyhow::Result<i64> {
        // Gap-free per app: numbered under the app's lock. Every listener
        // (`addonhost local`, the servers) hears of it once the transaction
        // commits, not before.
        self.lock_app(app_id);
        self.releases.set(self.releases.get() + 1);
        let next = match self.cache.borrow().get(&Key::NextRelease(app_id)) {
            Some(Val::Number(v)) => Some(*v),
            _ => None,
        };
        if let Some(version) = next {
            // Numbered when read ahead, under the app's lock: the insert
            // need not be waited for.
            self.defer(
                "WITH r AS (INSERT INTO releases (app_id, version, description, actor, created_at)
                            VALUES ($1, $6, $2, $3, $4) RETURNING version)
                 SELECT pg_notify($5, (SELECT name FROM apps WHERE id = $1)) FROM r",
                params![
                    app_id,
                    description.to_string(),
                    actor.to_string(),
                    unix_now(),
                    super::RELEASES_CHANNEL.to_string(),
                    version
                ],
            );
            self.cache
                .borrow_mut()
                .set(Key::NextRelease(app_id), Val::Number(version + 1));
            return Ok(version);
        }
        let rows = self.query(
            "WITH r AS (INSERT INTO releases (app_id, version, description, actor, created_at)
                        SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4 FROM releases WHERE app_id = $1
                        RETURNING version)
             SELECT r.version, pg_notify($5, (SELECT name FROM apps WHERE id = $1)) FROM r",
            params![
                app_id,
                description.to_string(),
                actor.to_string(),
                unix_now(),
                super::RELEASES_CHANNEL.to_string()
            ],
        )?;
        Ok(rows[0].try_get(0)?)
    }
    fn releases(&self, app_id: i64) -> anyhow::Result<Vec<Release>> {
        self.lock_app(app_id);
        self.all(
            "SELECT version, description, actor, created_at FROM releases WHERE app_id = $1 ORDER BY version DESC",
            params![app_id],
            |r| {
                Ok(Release {
                    version: r.try_get(0)?,
                    description: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            },
        )
    }
    fn audit(
        &self,
        actor: &str,
        action: &str,
        app: Option<&str>,
        addon: Option<&str>,
        detail: &str,
    ) -> anyhow::Result<()> {
        // The entry, and every AUDIT_PRUNE_EVERY entries of the actor this
        // process writes, the actor's older ones past the retention, in one
        // statement nobody waits for. Counted per actor here, not by the
        // entry's id: the common entry is a bare INSERT (a pruning
        // statement costs PostgreSQL a few times more even when it prunes
        // nothing), no interleaving of actors can skip one's pruning, and
        // with N servers an actor holds at most N × AUDIT_PRUNE_EVERY
        // entries past its retention. (Actors are a small set the platform
        // names, so the map stays small.)
        static WRITTEN: std::sync::Mutex<Option<HashMap<String, i64>>> =
            std::sync::Mutex::new(None);
        let keep = crate::store::audit_keep() as i64;
        let n = {
            let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
            let count = written.get_or_insert_with(HashMap::new);
            let n = count.entry(actor.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let entry = params![
            unix_now(),
            actor.to_string(),
            action.to_string(),
            app.map(str::to_string),
            addon.map(str::to_string),
            detail.to_string()
        ];
        if keep > 0 && n % crate::store::AUDIT_PRUNE_EVERY == 0 {
            let mut params = entry;
            params.extend(params![keep]);
            self.defer(
                "WITH e AS (INSERT INTO audit (at, actor, action, app, addon, detail)
                            VALUES ($1, $2, $3, $4, $5, $6))
                 DELETE FROM audit WHERE actor = $2 AND id <=
                   (SELECT id FROM audit WHERE actor = $2 ORDER BY id DESC LIMIT 1 OFFSET $7)",
                params,
            );
        } else {
            self.defer(
                "INSERT INTO audit (at, actor, action, app, addon, detail)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                entry,
            );
        }
        Ok(())
    }
    fn prune_audit(&self, actor: &str, keep: u64) -> anyhow::Result<u64> {
        if keep == 0 {
            return Ok(0);
        }
        self.execute(
            "DELETE FROM audit WHERE actor = $1 AND id <=
               (SELECT id FROM audit WHERE actor = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            params![actor.to_string(), keep as i64],
        )
    }
    fn audit_entries(&self, app: Option<&str>, limit: i64) -> anyhow::Result<Vec<AuditEntry>> {
        self.all(
            "SELECT at, actor, action, app, addon, detail FROM audit
             WHERE $1::TEXT IS NULL OR app = $1 ORDER BY id DESC LIMIT $2",
            params![app.map(str::to_string), limit],
            |r| {
                Ok(AuditEntry {
                    at: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    app: r.try_get(3)?,
                    addon: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            },
        )
    }

    fn config_vars(&self, app_id: i64) -> anyhow::Result<Vec<ConfigVar>> {
        self.lock_app(app_id);
        self.all(
            "SELECT name, value, attachment_id FROM config_vars WHERE app_id = $1 ORDER BY name COLLATE \"C\"",
            params![app_id],
            var_row,
        )
    }
    fn config_var(&self, app_id: i64, name: &str) -> anyhow::Result<Option<ConfigVar>> {
        self.read_one(Ahead::ConfigVar { app_id, name }, |v| match v {
            Val::Var(v) => Some(v.clone()),
            _ => None,
        })
    }
    fn vars_of_attachment(&self, attachment_id: i64) -> anyhow::Result<Vec<ConfigVar>> {
        self.read_one(Ahead::VarsOfAttachment(attachment_id), |v| match v {
            Val::Vars(v) => Some(v.clone()),
            _ => None,
        })
    }
    fn upsert_var(
        &self,
        app_id: i64,
        name: &str,
        value: &str,
        owner: Option<i64>,
    ) -> anyhow::Result<()> {
        self.lock_app(app_id);
        self.defer(
            "INSERT INTO config_vars (app_id, name, value, attachment_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app_id, name) DO UPDATE SET value = EXCLUDED.value, attachment_id = EXCLUDED.attachment_id",
            params![app_id, name.to_string(), value.to_string(), owner],
        );
        let mut cache = self.cache.borrow_mut();
        cache.forget(|k| matches!(k, Key::VarsOf(_)));
        cache.set(
            Key::Var(app_id, name.to_string()),
            Val::Var(Some(ConfigVar {
                name: name.to_string(),
                value: value.to_string(),
                attachment_id: owner,
            })),
        );
        Ok(())
    }
    fn delete_var(&self, app_id: i64, name: &str) -> anyhow::Result<()> {
        self.lock_app(app_id);
        self.defer(
            "DELETE FROM config_vars WHERE app_id = $1 AND name = $2",
            params![app_id, name.to_string()],
        );
        let mut cache = self.cache.borrow_mut();
        cache.forget(|k| matches!(k, Key::VarsOf(_)));
        cache.set(Key::Var(app_id, name.to_string()), Val::Var(None));
        Ok(())
    }
    fn delete_vars_of_attachment(&self, attachment_id: i64) -> anyhow::Result<usize> {
        self.lock_app_of_attachment(attachment_id);
        self.cache.borrow_mut().forget_vars();
        Ok(self.execute(
            "DELETE FROM config_vars WHERE attachment_id = $1",
            params![attachment_id],
        )? as usize)
    }
    fn var_owners(&self, app_id: i64) -> anyhow::Result<BTreeMap<i64, (String, String)>> {
        self.lock_app(app_id);
        Ok(self
            .all(
                "SELECT t.id, r.name, t.name FROM attachments t JOIN resources r ON r.id = t.resource_id WHERE t.app_id = $1",
                params![app_id],
                |r| Ok((r.try_get::<_, i64>(0)?, (r.try_get(1)?, r.try_get(2)?))),
            )?
            .into_iter()
            .collect())
    }
    fn take_over_var(&self, attachment_id: i64, name: &str) -> anyhow::Result<()> {
        self.lock_app_of_attachment(attachment_id);
        self.defer(
            "INSERT INTO var_takeovers (attachment_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            params![attachment_id, name.to_string()],
        );
        self.cache.borrow_mut().set(
            Key::TakenOver(attachment_id, name.to_string()),
            Val::Flag(true),
        );
        Ok(())
    }
    fn taken_over(&self, attachment_id: i64, name: &str) -> anyhow::Result<bool> {
        self.read_one(
            Ahead::TakenOver {
                attachment_id,
                name,
            },
            |v| match v {
                Val::Flag(f) => Some(*f),
                _ => None,
            },
        )
    }

    fn resource_by_uuid(&self, uuid: &str) -> anyhow::Result<Option<Resource>> {
        self.read_one(Ahead::ResourceByUuid(uuid), resource)
    }
    fn resource_by_name(&self, name: &str) -> anyhow::Result<Option<Resource>> {
        self.read_one(Ahead::ResourceByName(name), resource)
    }
    fn resource_by_id(&self, id: i64) -> anyhow::Result<Option<Resource>> {
        self.read_one(Ahead::ResourceById(id), resource)
    }
    fn resource_by_partner_id(
        &self,
        service: &str,
        partner_id: &str,
    ) -> anyhow::Result<Option<Resource>> {
        self.read_one(
            Ahead::ResourceByPartnerId {
                service,
                partner_id,
            },
            resource,
        )
    }
    fn list_resources(&self, app_id: Option<i64>) -> anyhow::Result<Vec<Resource>> {
        if let Some(app) = app_id {
            self.lock_app(app);
        }
        self.all(
            &format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id
                 WHERE r.state <> 'deprovisioned' AND ($1::BIGINT IS NULL OR r.app_id = $1
                       OR r.id IN (SELECT resource_id FROM attachments WHERE app_id = $1))
                 ORDER BY a.name, r.created_at, r.name"
            ),
            params![app_id],
            resource_row,
        )
    }
    fn provisioned_of_service(&self, service: &str) -> anyhow::Result<Vec<Resource>> {
        self.all(
            &format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources r JOIN apps a ON a.id = r.app_id
                 WHERE r.service = $1 AND r.state = 'provisioned' ORDER BY r.id"
            ),
            params![service.to_string()],
            resource_row,
        )
    }
    fn insert_resource(&self, r: &NewResource) -> anyhow::Result<i64> {
        self.lock_app(r.app_id);
        let now = unix_now();
        const INSERT: &str = "INSERT INTO resources (id, uuid, name, service, plan, app_id, state, created_at, updated_at,
                                    reserved_by, reserved_until, request)
             VALUES (COALESCE($10, nextval('resources_id_seq')), $1, $2, $3, $4, $5, 'provisioning', $6, $6, $7, $8, $9)
             RETURNING id";
        let reserved = self.cache.borrow_mut().take_id("resources");
        let params = params![
            r.uuid.to_string(),
            r.name.to_string(),
            r.service.to_string(),
            r.plan.to_string(),
            r.app_id,
            now,
            r.reserved_by.to_string(),
            r.reserved_until,
            r.request.to_string(),
            reserved
        ];
        let id = match reserved {
            // Its id reserved when read ahead: the insert need not be
            // waited for.
            Some(id) => {
                self.defer(INSERT, params);
                id
            }
            None => self.query(INSERT, params)?[0].try_get(0)?,
        };
        self.cache.borrow_mut().forget_resources();
        self.resource_seen(id, r.app_id);
        Ok(id)
    }
    fn update_resource(
        &self,
        id: i64,
        partner_id: Option<&str>,
        state: ResourceState,
        plan: &str,
        message: Option<&str>,
    ) -> anyhow::Result<()> {
        self.lock_app_of_resource(id);
        self.cache.borrow_mut().forget_resources();
        self.defer(
            "UPDATE resources SET partner_id = $2, state = $3, plan = $4, message = $5, updated_at = $6 WHERE id = $1",
            params![
                id,
                partner_id.map(str::to_string),
                state.as_str().to_string(),
                plan.to_string(),
                message.map(str::to_string),
                unix_now()
            ],
        );
        Ok(())
    }
    fn claim_reservation(
        &self,
        id: i64,
        owner: &str,
        until: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        self.lock_app_of_resource(id);
        self.cache.borrow_mut().forget_resources();
        Ok(self.execute(
            "UPDATE resources SET reserved_by = $2, reserved_until = $3
             WHERE id = $1 AND state = 'provisioning' AND partner_id IS NULL
               AND (reserved_until IS NULL OR reserved_until <= $4)",
            params![id, owner.to_string(), until, now],
        )? == 1)
    }
    fn delete_resource(&self, id: i64) -> anyhow::Result<()> {
        self.lock_app_of_resource(id);
        self.cache.borrow_mut().clear();
        for sql in [
            "DELETE FROM var_takeovers WHERE attachment_id IN (SELECT id FROM attachments WHERE resource_id = $1)",
            "DELETE FROM attachments WHERE resource_id = $1",
            "DELETE FROM resources WHERE id = $1",
        ] {
            self.defer(sql, params![id]);
        }
        Ok(())
    }
    fn rotation_succeeded(&self, id: i64, at: i64) -> anyhow::Result<()> {
        self.lock_app_of_resource(id);
        self.cache.borrow_mut().forget_resources();
        self.defer(
            "UPDATE resources SET rotated_at = $2, rotation_error = NULL, rotation_failures = 0, next_rotation_at = NULL, rotation_claimed_until = NULL WHERE id = $1",
            params![id, at],
        );
        Ok(())
    }
    fn rotation_failed(&self, id: i64, error: &str, retry_at: i64) -> anyhow::Result<()> {
        self.lock_app_of_resource(id);
        self.cache.borrow_mut().forget_resources();
        self.defer(
            "UPDATE resources SET rotation_error = $2, rotation_failures = rotation_failures + 1, next_rotation_at = $3, rotation_claimed_until = NULL WHERE id = $1",
            params![id, error.to_string(), retry_at],
        );
        Ok(())
    }
    fn insert_attachment(&self, resource_id: i64, app_id: i64, name: &str) -> anyhow::Result<i64> {
        self.lock_app_of_resource(resource_id);
        self.lock_app(app_id);
        const INSERT: &str = "INSERT INTO attachments (id, resource_id, app_id, name, created_at)
             VALUES (COALESCE($5, nextval('attachments_id_seq')), $1, $2, $3, $4) RETURNING id";
        let reserved = self.cache.borrow_mut().take_id("attachments");
        let params = params![resource_id, app_id, name.to_string(), unix_now(), reserved];
        let id = match reserved {
            Some(id) => {
                self.defer(INSERT, params);
                id
            }
            None => self.query(INSERT, params)?[0].try_get(0)?,
        };
        self.owners.saw_attachment(id, app_id, resource_id);
        self.cache.borrow_mut().forget_attachments();
        Ok(id)
    }
    fn delete_attachment(&self, id: i64) -> anyhow::Result<()> {
        self.lock_app_of_attachment(id);
        match self.owners.attachment(id) {
            Some((_, resource)) => self.lock_app_of_resource(resource),
            None => self.lock_app_by(locks::RESOURCE_APP_OF_ATTACHMENT, params![id]),
        }
        self.defer(
            "DELETE FROM var_takeovers WHERE attachment_id = $1",
            params![id],
        );
        self.defer("DELETE FROM attachments WHERE id = $1", params![id]);
        let mut cache = self.cache.borrow_mut();
        cache.forget_attachments();
        cache.forget_vars();
        Ok(())
    }
    fn attachments_of_resource(&self, resource_id: i64) -> anyhow::Result<Vec<Attachment>> {
        self.read_one(Ahead::AttachmentsOfResource(resource_id), |v| match v {
            Val::Attachments(a) => Some(a.clone()),
            _ => None,
        })
    }
    fn attachment_by_name(&self, app_id: i64, name: &str) -> anyhow::Result<Option<Attachment>> {
        self.read_one(Ahead::AttachmentByName { app_id, name }, |v| match v {
            Val::Attachment(a) => Some(a.clone()),
            _ => None,
        })
    }

    fn kv_get(&self, service: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        kv::kv_get(self, service, key)
    }
    fn kv_put(&self, service: &str, key: &str, value: Option<&[u8]>) -> anyhow::Result<()> {
        kv::kv_put(self, service, key, value)
    }
    fn kv_usage(&self, service: &str) -> anyhow::Result<(u64, u64)> {
        kv::kv_usage(self, service)
    }
    fn kv_keys(
        &self,
        service: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        kv::kv_keys(self, service, prefix, after, limit)
    }
    fn kv_count(&self, service: &str, prefix: &str) -> anyhow::Result<u64> {
        kv::kv_count(self, service, prefix)
    }
    fn lock_kv(&self, service: &str, keys: &[&str], listing: bool) -> anyhow::Result<()> {
        kv::lock_kv(self, service, keys, listing);
        Ok(())
    }
    fn plugin_dirs(&self, service: &str) -> anyhow::Result<Vec<String>> {
        self.lock(locks::named(Space::PluginDirs, &[service]), false);
        self.all(
            "SELECT dir FROM plugin_dirs WHERE service = $1 ORDER BY trusted_at",
            params![service.to_string()],
            |r| Ok(r.try_get(0)?),
        )
    }
    fn trust_plugin_dir(&self, service: &str, dir: &str) -> anyhow::Result<()> {
        self.lock(locks::named(Space::PluginDirs, &[service]), false);
        self.defer(
            "INSERT INTO plugin_dirs (service, dir, trusted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            params![service.to_string(), dir.to_string(), unix_now()],
        );
        Ok(())
    }

    fn insert_session(&self, s: &NewSession) -> anyhow::Result<()> {
        self.defer(
            "DELETE FROM sessions WHERE kind = $1 AND expires_at <= $2",
            params![s.kind.to_string(), s.now],
        );
        tokens::bound_kind(self, s)?;
        self.defer(
            "INSERT INTO sessions (id_hash, kind, data, expires_at) VALUES ($1, $2, $3, $4)",
            params![
                s.id_hash.to_string(),
                s.kind.to_string(),
                s.data.to_string(),
                s.expires_at
            ],
        );
        Ok(())
    }
    fn session(&self, id_hash: &str, kind: &str, now: i64) -> anyhow::Result<Option<String>> {
        self.one(
            "SELECT data FROM sessions WHERE id_hash = $1 AND kind = $2 AND expires_at > $3",
            params![id_hash.to_string(), kind.to_string(), now],
            |r| Ok(r.try_get(0)?),
        )
    }
    fn delete_session(&self, id_hash: &str) -> anyhow::Result<()> {
        self.defer(
            "DELETE FROM sessions WHERE id_hash = $1",
            params![id_hash.to_string()],
        );
        Ok(())
    }
    fn setting(&self, name: &str) -> anyhow::Result<Option<String>> {
        self.lock(locks::named(Space::Setting, &[name]), false);
        self.one(
            "SELECT value FROM settings WHERE name = $1",
            params![name.to_string()],
            |r| Ok(r.try_get(0)?),
        )
    }
    fn insert_setting(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.lock(locks::named(Space::Setting, &[name]), false);
        self.defer(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            params![name.to_string(), value.to_string()],
        );
        Ok(())
    }
    fn put_setting(&self, name: &str, value: Option<&str>) -> anyhow::Result<()> {
        self.lock(locks::named(Space::Setting, &[name]), false);
        match value {
            Some(v) => self.defer(
                "INSERT INTO settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name.to_string(), v.to_string()],
            ),
            None => self.defer(
                "DELETE FROM settings WHERE name = $1",
                params![name.to_string()],
            ),
        };
        Ok(())
    }
    fn claim_rotation(
        &self,
        seen: &Resource,
        owner: &str,
        until: i64,
        now: i64,
    ) -> anyhow::Result<bool> {
        self.lock_app(seen.app_id);
        self.cache.borrow_mut().forget_resources();
        Ok(self.execute(
            "UPDATE resources SET rotation_claimed_by = $2, rotation_claimed_until = $3
             WHERE id = $1 AND state = 'provisioned'
               AND rotated_at IS NOT DISTINCT FROM $4 AND rotation_failures = $5
               AND (rotation_claimed_until IS NULL OR rotation_claimed_until <= $6)",
            params![
                seen.id,
                owner.to_string(),
                until,
                seen.rotated_at,
                seen.rotation_failures,
                now
            ],
        )? == 1)
    }
    fn record_server(&self, s: &ServerRow) -> anyhow::Result<()> {
        self.defer(
            "INSERT INTO servers (id, address, started_at, seen_at, plugins, schema_version)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, seen_at = excluded.seen_at,
                                            plugins = excluded.plugins,
                                            schema_version = excluded.schema_version",
            params![
                s.id.clone(),
                s.address.clone(),
                s.started_at,
                s.seen_at,
                s.plugins.clone(),
                super::schema::version()
            ],
        );
        Ok(())
    }
    fn servers(&self, seen_since: i64) -> anyhow::Result<Vec<ServerRow>> {
        self.all(
            "SELECT id, address, started_at, seen_at, plugins FROM servers
             WHERE seen_at >= $1 ORDER BY started_at, id",
            params![seen_since],
            |r| {
                Ok(ServerRow {
                    id: r.try_get(0)?,
                    address: r.try_get(1)?,
                    started_at: r.try_get(2)?,
                    seen_at: r.try_get(3)?,
                    plugins: r.try_get(4)?,
                })
            },
        )
    }
    fn delete_server(&self, id: &str) -> anyhow::Result<()> {
        self.defer("DELETE FROM servers WHERE id = $1", params![id.to_string()]);
        Ok(())
    }
    fn accepted_components(&self, service: &str) -> anyhow::Result<Vec<String>> {
        self.lock(locks::named(Space::Components, &[service]), false);
        self.all(
            "SELECT hash FROM plugin_components WHERE service = $1 ORDER BY accepted_at, hash",
            params![service.to_string()],
            |r| Ok(r.try_get(0)?),
        )
    }
    fn accept_component(&self, service: &str, hash: &str, now: i64) -> anyhow::Result<()> {
        self.lock(locks::named(Space::Components, &[service]), false);
        self.defer(
            "INSERT INTO plugin_components (service, hash, accepted_at) VALUES ($1, $2, $3)
             ON CONFLICT (service, hash) DO NOTHING",
            params![service.to_string(), hash.to_string(), now],
        );
        Ok(())
    }
    fn retire_components(&self, service: &str, keep: &str) -> anyhow::Result<usize> {
        self.lock(locks::named(Space::Components, &[service]), false);
        Ok(self.execute(
            "DELETE FROM plugin_components WHERE service = $1 AND hash <> $2",
            params![service.to_string(), keep.to_string()],
        )? as usize)
    }

    fn osb_instance(&self, instance_id: &str) -> anyhow::Result<Option<OsbInstance>> {
        osb::osb_instance(self, instance_id)
    }
    fn insert_osb_instance(&self, i: &OsbInstance) -> anyhow::Result<bool> {
        osb::insert_osb_instance(self, i)
    }
    fn set_osb_instance_request(&self, instance_id: &str, request: &str) -> anyhow::Result<()> {
        osb::set_osb_instance_request(self, instance_id, request)
    }
    fn delete_osb_instance(&self, instance_id: &str) -> anyhow::Result<()> {
        osb::delete_osb_instance(self, instance_id)
    }
    fn osb_binding(&self, binding_id: &str) -> anyhow::Result<Option<OsbBinding>> {
        osb::osb_binding(self, binding_id)
    }
    fn osb_bindings_of(&self, instance_id: &str) -> anyhow::Result<Vec<OsbBinding>> {
        osb::osb_bindings_of(self, instance_id)
    }
    fn insert_osb_binding(&self, b: &OsbBinding) -> anyhow::Result<bool> {
        osb::insert_osb_binding(self, b)
    }
    fn update_osb_binding(&self, b: &OsbBinding) -> anyhow::Result<()> {
        osb::update_osb_binding(self, b)
    }
    fn delete_osb_binding(&self, binding_id: &str) -> anyhow::Result<()> {
        osb::delete_osb_binding(self, binding_id)
    }
    fn insert_owned_session(&self, s: &NewSession, owner: &str, max: u64) -> anyhow::Result<()> {
        tokens::insert_owned_session(self, s, owner, max)
    }
    fn spend_once(&self, key: &str, expires_at: i64, now: i64) -> anyhow::Result<bool> {
        tokens::spend_once(self, key, expires_at, now)
    }
    fn spent(&self, key: &str, now: i64) -> anyhow::Result<bool> {
        tokens::spent(self, key, now)
    }
    fn outbox_entry(&self, uuid: &str) -> anyhow::Result<Option<OutboxEntry>> {
        outbox::outbox_entry(self, uuid)
    }
    fn put_outbox_entry(&self, e: &OutboxEntry) -> anyhow::Result<()> {
        outbox::put_outbox_entry(self, e)
    }
    fn delete_outbox_entry(&self, uuid: &str) -> anyhow::Result<()> {
        outbox::delete_outbox_entry(self, uuid)
    }
    fn outbox_entries(&self) -> anyhow::Result<Vec<OutboxEntry>> {
        outbox::outbox_entries(self)
    }
    fn claim_outbox_entry(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        skip: &[String],
    ) -> anyhow::Result<Option<OutboxEntry>> {
        outbox::claim_outbox_entry(self, owner, now, until, skip)
    }
    fn release_outbox_entry(&self, uuid: &str, owner: &str) -> anyhow::Result<()> {
        outbox::release_outbox_entry(self, uuid, owner)
    }
}
