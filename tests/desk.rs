//! The care desk's API: the resident's card (what staff and family are shown, what is
//! checked, what is audited) and resident names on the live stream, on both backends.

use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ws::WsClient;

fn full_card() -> Value {
    json!({
        "address": "東京都中野区中央1-2-3 ハイツ中野 101",
        "phone": "03-1234-5678",
        "key_holder": "隣の佐藤さん (102号室)",
        "key_box": "玄関横のキーボックス、番号 4821",
        "care_level": "care_2",
        "doctor": "中野クリニック 山田先生 03-9999-0000",
        "allergies": "ペニシリン",
        "care_notes": "耳が遠い。\nインターホンは長めに押す。",
        "emergency_contacts": [
            {"name": "田中 花子", "relation": "娘", "phone": "090-1111-2222"},
            {"name": "佐藤 一郎", "relation": "協力員", "phone": "03-2222-3333"}
        ]
    })
}

async fn resident_card_is_kept_checked_scoped_and_audited(backend: Backend) -> Result<()> {
    let hub = TestHub::start_with(backend, &[]).await?;
    let mother = hub.resident(json!({"name": "Tanaka Yoshiko"})).await?;
    let other = hub.resident(json!({"name": "Suzuki Jiro"})).await?;
    let staff = hub.user("night-staff", "staff", &[]).await?;
    let family = hub.user("daughter", "family", &[mother]).await?;
    let path = format!("/residents/{mother}");

    // A new resident has an empty card.
    let fresh = hub.expect(Method::GET, &path, None, 200).await?;
    assert_eq!(fresh["card"]["address"], Value::Null);
    assert_eq!(fresh["card"]["emergency_contacts"], json!([]));

    // Staff write the whole card; the answer and a later read agree, contacts in order.
    let (status, written) = hub
        .call(
            Some(&staff),
            Method::PATCH,
            &path,
            Some(json!({"card": full_card()})),
        )
        .await?;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["card"], full_card());
    assert_eq!(written["name"], "Tanaka Yoshiko");
    let (_, read) = hub.call(Some(&staff), Method::GET, &path, None).await?;
    assert_eq!(read["card"], full_card());
    assert_eq!(read["card"]["emergency_contacts"][1]["name"], "佐藤 一郎");

    // A partial change keeps the rest; null clears one field.
    let (status, patched) = hub
        .call(
            Some(&staff),
            Method::PATCH,
            &path,
            Some(json!({"card": {"phone": "03-1234-0000", "allergies": null}})),
        )
        .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["card"]["phone"], "03-1234-0000");
    assert_eq!(patched["card"]["allergies"], Value::Null);
    assert_eq!(patched["card"]["key_holder"], full_card()["key_holder"]);

    // Bad input is refused, naming the field, and nothing changes.
    for (card, names) in [
        (json!({"phone": "call the office"}), "card.phone"),
        (json!({"care_level": "care_9"}), "care_9"),
        (json!({"adress": "typo"}), "adress"),
        (
            json!({"emergency_contacts": [{"name": "", "phone": "090"}]}),
            "emergency_contacts[0].name",
        ),
    ] {
        let (status, body) = hub
            .call(
                Some(&staff),
                Method::PATCH,
                &path,
                Some(json!({ "card": card })),
            )
            .await?;
        assert_eq!(status, 422, "{card} was accepted: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(names),
            "{body}"
        );
    }
    let (_, unchanged) = hub.call(Some(&staff), Method::GET, &path, None).await?;
    assert_eq!(unchanged["card"], patched["card"]);

    // The family sees address, phone, care level, doctor; not the key, notes or contacts.
    let (status, seen) = hub.call(Some(&family), Method::GET, &path, None).await?;
    assert_eq!(status, 200);
    let card = &seen["card"];
    assert_eq!(card["address"], full_card()["address"]);
    assert_eq!(card["phone"], "03-1234-0000");
    assert_eq!(card["care_level"], "care_2");
    assert_eq!(card["doctor"], full_card()["doctor"]);
    for hidden in ["key_holder", "key_box", "care_notes"] {
        assert_eq!(card[hidden], Value::Null, "family sees {hidden}");
    }
    assert_eq!(card["emergency_contacts"], json!([]));
    let text = seen.to_string();
    assert!(
        !text.contains("4821") && !text.contains("090-1111-2222"),
        "{text}"
    );
    // … may not write it, and does not learn that another resident exists.
    let (status, _) = hub
        .call(
            Some(&family),
            Method::PATCH,
            &path,
            Some(json!({"card": {"phone": "0"}})),
        )
        .await?;
    assert_eq!(status, 403);
    let (status, _) = hub
        .call(
            Some(&family),
            Method::GET,
            &format!("/residents/{other}"),
            None,
        )
        .await?;
    assert_eq!(status, 404);

    // Every change is audited by who and which fields, never with the values.
    let audit = hub
        .expect(Method::GET, "/audit?limit=50", None, 200)
        .await?;
    let updates: Vec<&Value> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "resident.update" && e["target"] == format!("resident/{mother}"))
        .collect();
    assert_eq!(updates.len(), 2, "{audit}");
    assert!(updates.iter().all(|e| e["actor"] == "night-staff"));
    assert!(updates
        .iter()
        .any(|e| e["details"]["card"] == json!(["allergies", "phone"])));
    assert!(
        !audit.to_string().contains("4821"),
        "the key box code is in the audit trail"
    );

    // Erasing the resident erases the card.
    hub.expect(Method::DELETE, &path, None, 204).await?;
    let again = hub.resident(json!({"name": "Next"})).await?;
    let next = hub
        .expect(Method::GET, &format!("/residents/{again}"), None, 200)
        .await?;
    assert_eq!(next["card"]["address"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn sqlite_resident_card_is_kept_checked_scoped_and_audited() -> Result<()> {
    resident_card_is_kept_checked_scoped_and_audited(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_resident_card_is_kept_checked_scoped_and_audited() -> Result<()> {
    if skip_postgres("postgres_resident_card_is_kept_checked_scoped_and_audited") {
        return Ok(());
    }
    resident_card_is_kept_checked_scoped_and_audited(Backend::Postgres).await
}

/// A resident created or renamed after a dashboard connected is named on its stream
/// (the board and the alert queue show names, not ids); a family user hears only of theirs.
#[tokio::test]
async fn residents_created_or_renamed_are_named_on_the_stream() -> Result<()> {
    let hub = TestHub::start().await?;
    let mother = hub.resident(json!({"name": "Mother"})).await?;
    let family = hub.user("son", "family", &[mother]).await?;
    let mut staff = WsClient::connect(&hub, &hub.admin_token, None).await?;
    let mut fam = WsClient::connect(&hub, &family, None).await?;
    staff.next().await?;
    fam.next().await?;

    let late = hub.resident(json!({"name": "Ogawa Fumi"})).await?;
    let f = staff
        .until("the new resident's name", |f| f["type"] == "resident")
        .await?;
    assert_eq!(f["resident_id"], late);
    assert_eq!(f["name"], "Ogawa Fumi");

    hub.expect(
        Method::PATCH,
        &format!("/residents/{mother}"),
        Some(json!({"name": "Tanaka Haha"})),
        200,
    )
    .await?;
    let f = staff
        .until("the new name", |f| {
            f["type"] == "resident" && f["resident_id"] == mother
        })
        .await?;
    assert_eq!(f["name"], "Tanaka Haha");
    let f = fam
        .until("a resident frame", |f| f["type"] == "resident")
        .await?;
    assert_eq!(
        f["resident_id"], mother,
        "the family heard of another resident: {f}"
    );
    Ok(())
}

/// A PNG of one pixel: enough to tell a served tile from the dashboard's index page.
const TILE_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// Offline tiles: a tile set the test makes (zoom 0 and the four tiles of zoom 1) is served
/// by the hub itself at `/tiles/`; a missing tile is a 404, not the dashboard page, and
/// nothing outside the folder can be reached through it.
#[tokio::test]
async fn the_hub_serves_an_offline_tile_folder() -> Result<()> {
    let root = tempfile::tempdir()?;
    let tiles = root.path().join("tiles");
    std::fs::write(
        root.path().join("secret.txt"),
        "beside the tiles, never served",
    )?;
    let mut paths = vec!["0/0/0.png".to_string()];
    for (x, y) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        paths.push(format!("1/{x}/{y}.png"));
    }
    for p in &paths {
        let file = tiles.join(p);
        std::fs::create_dir_all(file.parent().ok_or_else(|| anyhow::anyhow!("no parent"))?)?;
        std::fs::write(file, TILE_PNG)?;
    }
    let dir = tiles.display().to_string();
    let hub = TestHub::start_with(Backend::Sqlite, &["--tiles-dir", &dir]).await?;
    for p in &paths {
        let res = hub
            .http
            .get(format!("{}/tiles/{p}", hub.base))
            .send()
            .await?;
        assert_eq!(res.status(), 200, "{p}");
        assert_eq!(res.headers()["content-type"], "image/png", "{p}");
        assert_eq!(res.bytes().await?.as_ref(), TILE_PNG, "{p}");
    }
    // (A bare "../" never reaches the hub: clients resolve it away; an encoded slash does.)
    for missing in [
        "/tiles/2/0/0.png",
        "/tiles/..%2fsecret.txt",
        "/tiles/1/..%2f..%2fsecret.txt",
    ] {
        let res = hub
            .http
            .get(format!("{}{missing}", hub.base))
            .send()
            .await?;
        assert_ne!(res.status(), 200, "{missing} was served");
        assert_ne!(
            res.headers().get("content-type").map(|v| v.as_bytes()),
            Some(b"text/html".as_slice()),
            "{missing} fell through to the dashboard page"
        );
    }
    // The dashboard's own pages are still the dashboard's.
    let page = hub.http.get(format!("{}/", hub.base)).send().await?;
    assert_eq!(page.status(), 200);
    Ok(())
}
