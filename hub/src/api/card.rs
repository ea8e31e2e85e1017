//! The resident's card in the API: merging a partial update into the stored card,
//! checking every field, and what each role is shown (family: [`ResidentCard::for_family`]).

use mimamori_protocol::api::Role;
use mimamori_protocol::card::{EmergencyContact, ResidentCard};

use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::text::{display_name, note};

/// Most emergency contacts a card keeps.
pub const MAX_CONTACTS: usize = 10;

/// The card as this caller may see it.
pub fn shown_to(caller: &AuthUser, card: ResidentCard) -> ResidentCard {
    match caller.user.role {
        Role::Family => card.for_family(),
        Role::Admin | Role::Staff => card,
    }
}

/// Applies a partial card (a JSON merge patch: a field set to `null` is cleared, the
/// contact list is replaced whole) to `base`, then checks the result.
pub fn patched(base: &ResidentCard, patch: &serde_json::Value) -> ApiResult<ResidentCard> {
    if !patch.is_object() {
        return Err(ApiError::Invalid("card must be an object".into()));
    }
    let mut value = serde_json::to_value(base).map_err(|e| ApiError::Internal(e.into()))?;
    super::residents::merge(&mut value, patch);
    let card: ResidentCard =
        serde_json::from_value(value).map_err(|e| ApiError::Invalid(format!("card: {e}")))?;
    valid(card)
}

/// The names of the fields a patch touches, for the audit trail (never their values:
/// the trail is read more widely than the card).
pub fn fields_of(patch: &serde_json::Value) -> Vec<String> {
    let mut fields: Vec<String> = patch
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    fields.sort();
    fields
}

fn valid(c: ResidentCard) -> ApiResult<ResidentCard> {
    if c.emergency_contacts.len() > MAX_CONTACTS {
        return Err(ApiError::Invalid(format!(
            "card.emergency_contacts may list at most {MAX_CONTACTS} people"
        )));
    }
    Ok(ResidentCard {
        address: line("card.address", c.address, 300)?,
        phone: c.phone.map(|p| phone("card.phone", &p)).transpose()?,
        key_holder: line("card.key_holder", c.key_holder, 200)?,
        key_box: line("card.key_box", c.key_box, 300)?,
        care_level: c.care_level,
        doctor: line("card.doctor", c.doctor, 300)?,
        allergies: lines("card.allergies", c.allergies, 1000)?,
        care_notes: lines("card.care_notes", c.care_notes, 4000)?,
        emergency_contacts: c
            .emergency_contacts
            .into_iter()
            .enumerate()
            .map(|(i, p)| contact(i, p))
            .collect::<ApiResult<_>>()?,
    })
}

fn contact(i: usize, p: EmergencyContact) -> ApiResult<EmergencyContact> {
    let field = format!("card.emergency_contacts[{i}]");
    Ok(EmergencyContact {
        name: display_name(&format!("{field}.name"), &p.name, 200)?,
        relation: line(&format!("{field}.relation"), p.relation, 100)?,
        phone: phone(&format!("{field}.phone"), &p.phone)?,
    })
}

/// One line of text; an empty one clears the field.
fn line(field: &str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    v.filter(|s| !s.trim().is_empty())
        .map(|s| display_name(field, &s, max))
        .transpose()
}

/// Text of several lines; an empty one clears the field.
fn lines(field: &str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    v.filter(|s| !s.trim().is_empty())
        .map(|s| note(field, &s, max))
        .transpose()
}

/// A number a phone can dial from a `tel:` link: digits with `+`, spaces, dashes,
/// dots and brackets as people write them.
fn phone(field: &str, p: &str) -> ApiResult<String> {
    let p = p.trim();
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let allowed = p
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.'));
    if allowed && (3..=20).contains(&digits) && p.chars().count() <= 30 {
        Ok(p.to_string())
    } else {
        Err(ApiError::Invalid(format!(
            "{field} {p:?} is not a phone number: 3 to 20 digits, with + - ( ) . or spaces"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimamori_protocol::card::CareLevel;
    use serde_json::json;

    #[test]
    fn a_patch_sets_clears_and_replaces_the_contact_list() -> ApiResult<()> {
        let base = patched(
            &ResidentCard::default(),
            &json!({"address": " 中野区中央1-2-3 ", "phone": "03-1234-5678", "care_level": "care_2",
                    "emergency_contacts": [{"name": "田中 花子", "relation": "娘", "phone": "090 1111 2222"}]}),
        )?;
        assert_eq!(base.address.as_deref(), Some("中野区中央1-2-3"));
        assert_eq!(base.care_level, Some(CareLevel::Care2));
        let next = patched(
            &base,
            &json!({"phone": null, "emergency_contacts": [{"name": "佐藤", "phone": "+81 3 0000 0000"}]}),
        )?;
        assert_eq!(next.phone, None);
        assert_eq!(next.address, base.address);
        assert_eq!(next.emergency_contacts.len(), 1);
        assert_eq!(next.emergency_contacts[0].name, "佐藤");
        Ok(())
    }

    #[test]
    fn bad_cards_say_which_field() {
        let base = ResidentCard::default();
        for (patch, field) in [
            (json!({"phone": "call me"}), "card.phone"),
            (json!({"adress": "typo"}), "adress"),
            (json!({"care_level": "care_9"}), "care_9"),
            (json!({"key_box": "a\nb"}), "card.key_box"),
            (
                json!({"emergency_contacts": [{"name": "x", "phone": "1"}]}),
                "emergency_contacts[0].phone",
            ),
        ] {
            match patched(&base, &patch) {
                Err(ApiError::Invalid(m)) => assert!(m.contains(field), "{m} names {field}"),
                other => panic!("{patch} gave {other:?}"),
            }
        }
        let many = vec![json!({"name": "x", "phone": "123"}); MAX_CONTACTS + 1];
        assert!(patched(&base, &json!({ "emergency_contacts": many })).is_err());
    }
}
