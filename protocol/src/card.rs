//! The resident's card: what a care worker needs in hand before acting on an alert
//! (where the person lives, how to reach them and whoever holds a key, their care
//! level, doctor, allergies and notes, and whom to call, in order).
//!
//! A `family` user sees the card without the fields that open the home or describe
//! third parties: see [`ResidentCard::for_family`].

use serde::{Deserialize, Serialize};

/// The care-need level of Japan's long-term care insurance (要支援 1–2, 要介護 1–5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CareLevel {
    /// 要支援1
    #[serde(rename = "support_1")]
    Support1,
    /// 要支援2
    #[serde(rename = "support_2")]
    Support2,
    /// 要介護1
    #[serde(rename = "care_1")]
    Care1,
    /// 要介護2
    #[serde(rename = "care_2")]
    Care2,
    /// 要介護3
    #[serde(rename = "care_3")]
    Care3,
    /// 要介護4
    #[serde(rename = "care_4")]
    Care4,
    /// 要介護5
    #[serde(rename = "care_5")]
    Care5,
}

/// One person to call about a resident; the card keeps them in calling order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyContact {
    pub name: String,
    /// Who they are to the resident ("daughter", "neighbour volunteer 協力員", "民生委員").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    pub phone: String,
}

/// The card of one resident. Every field may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResidentCard {
    pub address: Option<String>,
    pub phone: Option<String>,
    /// Who holds a spare key (a neighbour, the care office).
    pub key_holder: Option<String>,
    /// Where the key box is and how it opens.
    pub key_box: Option<String>,
    pub care_level: Option<CareLevel>,
    /// The family doctor or clinic, with a phone number.
    pub doctor: Option<String>,
    pub allergies: Option<String>,
    /// What a worker arriving at the door should know (hard of hearing, a dog, stairs).
    pub care_notes: Option<String>,
    /// In the order they are to be called.
    pub emergency_contacts: Vec<EmergencyContact>,
}

impl ResidentCard {
    /// What a family user may see: the key holder and key box (access to the home),
    /// the care notes (staff's working notes) and the emergency contacts (other
    /// people's names and numbers) are left out.
    pub fn for_family(&self) -> ResidentCard {
        ResidentCard {
            key_holder: None,
            key_box: None,
            care_notes: None,
            emergency_contacts: Vec::new(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_view_leaves_out_access_notes_and_third_parties() {
        let card = ResidentCard {
            address: Some("中野区1-2-3".into()),
            phone: Some("03-1234-5678".into()),
            key_holder: Some("隣の佐藤さん".into()),
            key_box: Some("門の左、暗証番号 1234".into()),
            care_level: Some(CareLevel::Care2),
            doctor: Some("山田医院".into()),
            allergies: Some("ペニシリン".into()),
            care_notes: Some("耳が遠い".into()),
            emergency_contacts: vec![EmergencyContact {
                name: "佐藤".into(),
                relation: None,
                phone: "090-0000-0000".into(),
            }],
        };
        let family = card.for_family();
        assert_eq!(family.address, card.address);
        assert_eq!(family.care_level, Some(CareLevel::Care2));
        assert_eq!(family.allergies, card.allergies);
        assert!(family.key_holder.is_none() && family.key_box.is_none());
        assert!(family.care_notes.is_none() && family.emergency_contacts.is_empty());
    }
}
