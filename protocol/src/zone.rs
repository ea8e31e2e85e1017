//! Safe-zone geometry as it travels in the API: a GeoJSON Polygon or a circle.
//!
//! These are plain data; the rules engine checks and interprets the geometry.

use serde::{Deserialize, Serialize};

/// A GeoJSON Polygon geometry: rings of `[lon, lat]` (an altitude may follow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoJsonPolygon {
    #[serde(rename = "type")]
    pub kind: String,
    pub coordinates: Vec<Vec<Vec<f64>>>,
}

/// A circle around a point, with its radius in metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Circle {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// The body of `POST /residents/{id}/geofences`: exactly one of `polygon` and `circle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewZone {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<GeoJsonPolygon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circle: Option<Circle>,
}

/// The shape of a stored zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneShape {
    Polygon(GeoJsonPolygon),
    Circle(Circle),
}

/// A stored safe zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub id: i64,
    pub resident_id: i64,
    pub name: String,
    #[serde(flatten)]
    pub shape: ZoneShape,
}

impl NewZone {
    /// The one shape the body names, or a message saying what is wrong.
    pub fn shape(&self) -> Result<ZoneShape, String> {
        match (&self.polygon, &self.circle) {
            (Some(p), None) => Ok(ZoneShape::Polygon(p.clone())),
            (None, Some(c)) => Ok(ZoneShape::Circle(*c)),
            (Some(_), Some(_)) => Err("give either \"polygon\" or \"circle\", not both".into()),
            (None, None) => Err(
                "a zone needs a \"polygon\" (GeoJSON Polygon) or a \"circle\" {lat, lon, radius_m}"
                    .into(),
            ),
        }
    }
}
