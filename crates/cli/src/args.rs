//! The command line, as clap reads it.

use std::time::Duration;

use acteon_client::AuditOutcome;
use acteon_core::{Compatibility, SchemaVersionRef, StartPosition, SubscriptionMode, TopicName};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::parse::{self, Payload};

#[derive(Debug, Parser)]
#[command(
    name = "acteon",
    version,
    about = "Command line of the Acteon event bus",
    after_help = "Exit codes: 0 done, 1 refused by the server (or records failed), \
                  2 usage, 3 server unreachable or stream broken."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Base URL of the server.
    #[arg(
        long,
        global = true,
        env = "ACTEON_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) url: String,
    /// API key, sent as `Authorization: Bearer <key>`.
    // `hide_env_values`: `--help` must not show the key from the environment.
    #[arg(long, global = true, env = "ACTEON_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<Secret>,
    /// Print JSON for programs instead of tables and sentences.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// An API key; `Debug` hides it.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List, create and delete topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Publish one JSON payload, or NDJSON records read from stdin.
    Publish(PublishArgs),
    /// Print a topic's records as they arrive.
    Tail(TailArgs),
    /// List, create, show and delete durable subscriptions.
    #[command(subcommand)]
    Subs(SubsCommand),
    /// List, add and end silences.
    #[command(subcommand)]
    Silences(SilencesCommand),
    /// List the loaded rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Register, read, check and delete JSON Schemas of a tenant.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Read the audit trail, newest first, or follow it.
    Audit(AuditArgs),
    /// Make API keys (needs no server).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// List topics.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create a topic.
    Create(CreateTopicArgs),
    /// Delete a topic (and end its subscriptions).
    #[command(visible_alias = "delete")]
    Rm {
        /// Kafka name: NAMESPACE.TENANT.NAME.
        topic: TopicName,
    },
    /// Bind a topic to a subject of its tenant: every record produced to
    /// it must match.
    Bind {
        /// Kafka name: NAMESPACE.TENANT.NAME.
        topic: TopicName,
        /// The subject's name, in the topic's namespace and tenant.
        subject: String,
        /// A version number, or `latest`: whichever is the latest at
        /// each publish.
        #[arg(long, default_value = "latest")]
        version: SchemaVersionRef,
    },
    /// Stop checking a topic's records against a schema.
    Unbind {
        /// Kafka name: NAMESPACE.TENANT.NAME.
        topic: TopicName,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateTopicArgs {
    /// NAMESPACE.TENANT.NAME, or NAMESPACE TENANT NAME.
    #[arg(required = true, num_args = 1..=3, value_name = "NAME")]
    pub(crate) name: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub(crate) partitions: u32,
    #[arg(long, default_value_t = 1)]
    pub(crate) replication_factor: i16,
    /// How long the broker keeps records (default: the broker's).
    #[arg(long)]
    pub(crate) retention_ms: Option<i64>,
    /// Bind the topic to a subject of its tenant: SUBJECT or
    /// SUBJECT:VERSION (default version: latest).
    #[arg(long, value_parser = parse::binding, value_name = "SUBJECT[:VERSION]")]
    pub(crate) schema: Option<acteon_core::SchemaBinding>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "With `-`, each line of stdin is one record: a bare JSON payload, \
    or with --envelope an object {\"payload\", \"key\", \"headers\"} (other fields are \
    ignored, so `acteon tail --json` output can be published again). --key and --header \
    apply to every record; an envelope's own key wins, and its headers are added. \
    Blank lines are skipped."
)]
pub(crate) struct PublishArgs {
    /// Kafka name: NAMESPACE.TENANT.NAME.
    pub(crate) topic: TopicName,
    /// A JSON payload, or `-` for NDJSON on stdin.
    #[arg(value_parser = parse::payload, value_name = "PAYLOAD|-")]
    pub(crate) payload: Payload,
    /// Partition key: records with one key land on one partition.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// A header, NAME=VALUE; repeat for more.
    #[arg(long = "header", short = 'H', value_parser = parse::header, value_name = "NAME=VALUE")]
    pub(crate) headers: Vec<(String, String)>,
    /// Stdin lines are {"payload", "key", "headers"} objects, not bare payloads.
    #[arg(long)]
    pub(crate) envelope: bool,
    /// Batch requests in flight at once when reading stdin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) concurrency: u16,
    /// Records per batch request when reading stdin, at most the server's
    /// max_batch_records (1000 by default).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) batch_size: u16,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Kafka name: NAMESPACE.TENANT.NAME.
    pub(crate) topic: TopicName,
    /// Where to start on partitions the subscription has no position in.
    #[arg(long, value_enum, default_value_t = Start::Latest)]
    pub(crate) from: Start,
    /// Subscription id (default: a new one, so tails never share records).
    #[arg(long)]
    pub(crate) subscription: Option<String>,
    /// `shared`: one id's connections split the records; `broadcast`: each
    /// gets every record.
    #[arg(long, value_enum, default_value_t = Mode::Shared)]
    pub(crate) mode: Mode,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
}

/// `--from`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Start {
    Earliest,
    Latest,
}

impl Start {
    pub(crate) fn position(self) -> StartPosition {
        match self {
            Self::Earliest => StartPosition::Earliest,
            Self::Latest => StartPosition::Latest,
        }
    }
}

/// `--mode`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    Shared,
    Broadcast,
}

impl Mode {
    pub(crate) fn mode(self) -> SubscriptionMode {
        match self {
            Self::Shared => SubscriptionMode::Shared,
            Self::Broadcast => SubscriptionMode::Broadcast,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubsCommand {
    /// List durable subscriptions.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Kafka name of the topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Create a durable subscription.
    Create(CreateSubArgs),
    /// A subscription with its live figures.
    Show {
        /// NAMESPACE.TENANT.ID, or NAMESPACE TENANT ID.
        #[arg(required = true, num_args = 1..=3, value_name = "SUBSCRIPTION")]
        subscription: Vec<String>,
    },
    /// Delete a subscription, its progress and its group.
    #[command(visible_alias = "delete")]
    Rm {
        /// NAMESPACE.TENANT.ID, or NAMESPACE TENANT ID.
        #[arg(required = true, num_args = 1..=3, value_name = "SUBSCRIPTION")]
        subscription: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateSubArgs {
    /// NAMESPACE.TENANT.ID, or NAMESPACE TENANT ID.
    #[arg(required = true, num_args = 1..=3, value_name = "SUBSCRIPTION")]
    pub(crate) subscription: Vec<String>,
    /// The topic: its short name, or the Kafka name of a topic of the same
    /// tenant.
    #[arg(long)]
    pub(crate) topic: String,
    /// Fixed at creation (server default: latest).
    #[arg(long, value_enum)]
    pub(crate) from: Option<Start>,
    #[arg(long)]
    pub(crate) ack_deadline_ms: Option<u64>,
    #[arg(long)]
    pub(crate) max_deliveries: Option<u32>,
    /// Delays before each redelivery, e.g. 1000,5000,30000.
    #[arg(long, value_delimiter = ',')]
    pub(crate) backoff_ms: Option<Vec<u64>>,
    #[arg(long)]
    pub(crate) max_in_flight: Option<usize>,
    #[arg(long, value_enum)]
    pub(crate) ordering: Option<Ordering>,
    /// Default: `<topic>-dlq`.
    #[arg(long)]
    pub(crate) dead_letter_topic: Option<String>,
}

/// `--ordering`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Ordering {
    /// Any order.
    None,
    /// At most one unsettled record per key.
    Key,
}

impl Ordering {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Key => "key",
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum SilencesCommand {
    /// List active silences.
    #[command(visible_alias = "list")]
    Ls {
        /// Ended and expired ones too.
        #[arg(long)]
        all: bool,
    },
    /// Silence a tenant's publishes (or a namespace's, a topic's, those a
    /// condition matches) for a while.
    Add(AddSilenceArgs),
    /// End a silence now.
    #[command(visible_alias = "end")]
    Rm { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("end").required(true).args(["duration", "until"])))]
pub(crate) struct AddSilenceArgs {
    #[arg(long)]
    pub(crate) tenant: String,
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// The topic's short name.
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// A CEL condition, e.g. 'payload.kind == "heartbeat"'.
    #[arg(long)]
    pub(crate) condition: Option<String>,
    /// How long, e.g. 30m, 2h, 1d.
    #[arg(long, value_parser = parse::duration)]
    pub(crate) duration: Option<Duration>,
    /// Until when, in RFC 3339, e.g. 2030-01-01T00:00:00Z.
    #[arg(long, value_parser = parse::time)]
    pub(crate) until: Option<DateTime<Utc>>,
    /// Why: shown to whoever wonders where the messages went.
    #[arg(long)]
    pub(crate) comment: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// The rules in evaluation order.
    #[command(visible_alias = "list")]
    Ls,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemasCommand {
    /// A tenant's subjects.
    #[command(visible_alias = "list")]
    Ls { namespace: String, tenant: String },
    /// Register a schema as the subject's next version; an identical
    /// schema answers with the version it has.
    Register {
        /// NAMESPACE.TENANT.SUBJECT.
        #[arg(value_parser = parse::subject)]
        subject: acteon_client::SubjectRef,
        /// A file holding the JSON Schema (draft 2020-12), or `-` for stdin.
        file: String,
    },
    /// A subject's version numbers.
    Versions {
        /// NAMESPACE.TENANT.SUBJECT.
        #[arg(value_parser = parse::subject)]
        subject: acteon_client::SubjectRef,
    },
    /// Print one version's schema.
    Show {
        /// NAMESPACE.TENANT.SUBJECT.
        #[arg(value_parser = parse::subject)]
        subject: acteon_client::SubjectRef,
        #[arg(long, default_value = "latest")]
        version: SchemaVersionRef,
    },
    /// Whether a schema could be registered, without registering it.
    Check {
        /// NAMESPACE.TENANT.SUBJECT.
        #[arg(value_parser = parse::subject)]
        subject: acteon_client::SubjectRef,
        /// A file holding the JSON Schema, or `-` for stdin.
        file: String,
    },
    /// Print a subject's compatibility mode, or set it.
    Config {
        /// NAMESPACE.TENANT.SUBJECT.
        #[arg(value_parser = parse::subject)]
        subject: acteon_client::SubjectRef,
        /// none, backward, forward, full, or one of those with _transitive.
        #[arg(long, value_parser = parse::compatibility)]
        set: Option<Compatibility>,
    },
    /// Delete a version (refused while a topic is bound to it).
    #[command(visible_alias = "delete")]
    Rm {
        /// NAMESPACE.TENANT.SUBJECT.
        #[arg(value_parser = parse::subject)]
        subject: acteon_client::SubjectRef,
        version: u32,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// Kafka name of the topic.
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// produced, denied, suppressed, throttled, failed, invalid or
    /// dead_lettered.
    #[arg(long)]
    pub(crate) outcome: Option<AuditOutcome>,
    /// Records to print (default 100; with --follow, 10 before following).
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Keep printing new records, oldest first, as they are written.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// How often --follow asks for new records (at least 100ms).
    #[arg(long, value_parser = parse::poll_interval, default_value = "1s")]
    pub(crate) interval: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// A new random secret and the `[[auth.keys]]` entry of its hash.
    New(NewKeyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NewKeyArgs {
    /// The key's id, shown in logs and audit records (default: key-<random>).
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// The grant's namespace, or `*` (the default once --tenant is given).
    #[arg(long, value_parser = parse::grant_namespace)]
    pub(crate) namespace: Option<String>,
    /// The grant's tenant, or `*`. Without --tenant or --namespace, the key
    /// has no grant.
    #[arg(long, value_parser = parse::grant_tenant)]
    pub(crate) tenant: Option<String>,
    /// What the grant allows.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["publish", "subscribe"])]
    pub(crate) ops: Vec<Op>,
}

/// An operation a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Op {
    Publish,
    Subscribe,
    Manage,
    Audit,
    Metrics,
    Schema,
    Admin,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Manage => "manage",
            Self::Audit => "audit",
            Self::Metrics => "metrics",
            Self::Schema => "schema",
            Self::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
