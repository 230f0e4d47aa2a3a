//! `otpgate admin store copy`: a site moved from sled to PostgreSQL, with
//! what was copied printed table by table.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use data_encoding::HEXLOWER;

use otpgate_actors::store::{SideDb, Site};
use otpgate_actors::{KvStore, PgConfig};

/// Copies the sled store of data folder `from` (or the store folder itself)
/// into the empty database `to`, and prints each table's records and
/// checksum.
pub(super) async fn copy(from: &Path, to: &PgConfig, json: bool) -> anyhow::Result<ExitCode> {
    let db = if from.join("db").is_dir() {
        from.join("db")
    } else {
        from.to_owned()
    };
    // sled makes a database where there is none: a mistyped folder would be
    // copied as an empty site.
    anyhow::ensure!(
        db.join("conf").is_file(),
        "{}: no otpgate store here (give the server's data folder)",
        from.display()
    );
    let source = KvStore::open(&db).with_context(|| {
        format!(
            "{}: cannot open the store (is its server still running?)",
            db.display()
        )
    })?;
    // The recordings beside the store, if any were made.
    let recordings = db.parent().map(|data| data.join("recordings"));
    let recordings = match recordings.filter(|folder| folder.join("conf").is_file()) {
        Some(folder) => Some(SideDb::open(&folder).with_context(|| {
            format!(
                "{}: cannot open the recordings (is their server still running?)",
                folder.display()
            )
        })?),
        None => None,
    };
    // Held as a server holds it until the copy is checked: none may be on
    // it now, and none starts on it meanwhile.
    let (target, _alone) = KvStore::connect_holding(to, Site::Alone)
        .await
        .context("cannot open the PostgreSQL database")?;
    let copied = source.copy_into(&target, recordings.as_ref()).await?;
    let hex = |sha: &[u8; 32]| HEXLOWER.encode(sha);
    if json {
        let tables: Vec<_> = copied
            .iter()
            .map(|table| {
                serde_json::json!({
                    "table": table.table,
                    "records": table.records,
                    "sha256": hex(&table.sha256),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "copied": tables }));
    } else {
        println!(
            "{:<16} {:>10}  sha256 (the same in both)",
            "table", "records"
        );
        for table in &copied {
            println!(
                "{:<16} {:>10}  {}",
                table.table,
                table.records,
                hex(&table.sha256)
            );
        }
        println!(
            "copied and checked. The PKI and the secret stay in the data folder (and the \
             recordings' anchor file, recordings/made); set [store] backend = \"postgres\" \
             and start the server."
        );
    }
    Ok(ExitCode::SUCCESS)
}
