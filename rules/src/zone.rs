//! Safe zones: validating their geometry and measuring how far a position lies inside or outside one.
//!
//! Distances are great-circle metres (geo's `Haversine` metric space). Containment is decided on
//! the longitude/latitude plane, which is exact enough for zones of at most tens of kilometres;
//! zones that cross the antimeridian are not supported (there are none in the wards we serve).

use geo::{
    ChamberlainDuquetteArea, Contains, Coord, Distance, Haversine, LineString, Point, Polygon,
    Validation,
};
use mimamori_protocol::zone::{Circle, GeoJsonPolygon, ZoneShape};

/// Smallest circle radius accepted; below this GPS noise alone would put a resident outside.
pub const MIN_RADIUS_M: f64 = 10.0;
/// Largest circle radius accepted; a bigger "safe" zone watches nothing.
pub const MAX_RADIUS_M: f64 = 50_000.0;
/// Positions allowed in one polygon, so that validating and measuring stay cheap per fix.
pub const MAX_POSITIONS: usize = 2_000;

/// Grid resolution for estimating how deep a polygon's interior goes (see [`SafeZone::max_depth_m`]).
const DEPTH_GRID: usize = 24;

/// A validated safe zone of one resident.
#[derive(Debug, Clone, PartialEq)]
pub struct SafeZone {
    id: i64,
    name: String,
    geometry: Geometry,
    max_depth_m: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Geometry {
    Circle { center: Point<f64>, radius_m: f64 },
    Polygon(Polygon<f64>),
}

impl SafeZone {
    /// Validates the geometry; the error is a sentence saying exactly what is wrong, fit for an API 422.
    pub fn new(id: i64, name: String, shape: &ZoneShape) -> Result<SafeZone, String> {
        let geometry = match shape {
            ZoneShape::Circle(c) => circle_geometry(c)?,
            ZoneShape::Polygon(p) => Geometry::Polygon(polygon_geometry(p)?),
        };
        let mut zone = SafeZone {
            id,
            name,
            geometry,
            max_depth_m: 0.0,
        };
        zone.max_depth_m = zone.estimate_max_depth();
        Ok(zone)
    }

    /// The zone's id as stored by the hub.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The zone's name, used in alert details and resolve reasons.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signed distance in metres from the point to the zone boundary: negative inside (depth), positive outside.
    ///
    /// A point inside a polygon's hole is outside the zone. A point exactly on the boundary gives 0.
    /// Non-finite input gives `f64::INFINITY` (outside), so garbage never counts as being home.
    pub fn signed_distance_m(&self, lat: f64, lon: f64) -> f64 {
        if !(lat.is_finite() && lon.is_finite()) {
            return f64::INFINITY;
        }
        let p = Point::new(lon, lat);
        match &self.geometry {
            Geometry::Circle { center, radius_m } => Haversine.distance(*center, p) - radius_m,
            Geometry::Polygon(poly) => {
                let d = rings(poly)
                    .flat_map(|r| r.lines())
                    .map(|l| segment_distance_m(p.0, l.start, l.end))
                    .fold(f64::INFINITY, f64::min);
                if poly.contains(&p) {
                    -d
                } else {
                    d
                }
            }
        }
    }

    /// How deep the interior reaches at its deepest point, in metres (estimated for polygons).
    ///
    /// The geofence rule caps its re-entry margin by this, so a small zone can still be re-entered.
    pub fn max_depth_m(&self) -> f64 {
        self.max_depth_m
    }

    fn estimate_max_depth(&self) -> f64 {
        match &self.geometry {
            Geometry::Circle { radius_m, .. } => *radius_m,
            Geometry::Polygon(poly) => {
                // A coarse grid is enough: the value only bounds a hysteresis margin, and a
                // slight underestimate errs towards letting a resident count as back home.
                let Some(bbox) = geo::BoundingRect::bounding_rect(poly) else {
                    return 0.0;
                };
                let (min, max) = (bbox.min(), bbox.max());
                let mut deepest = 0.0_f64;
                for i in 0..DEPTH_GRID {
                    for j in 0..DEPTH_GRID {
                        let fx = (i as f64 + 0.5) / DEPTH_GRID as f64;
                        let fy = (j as f64 + 0.5) / DEPTH_GRID as f64;
                        let lon = min.x + fx * (max.x - min.x);
                        let lat = min.y + fy * (max.y - min.y);
                        deepest = deepest.max(-self.signed_distance_m(lat, lon));
                    }
                }
                deepest
            }
        }
    }
}

/// Great-circle metres between two points given as latitude and longitude.
pub fn metres_between(a: (f64, f64), b: (f64, f64)) -> f64 {
    Haversine.distance(Point::new(a.1, a.0), Point::new(b.1, b.0))
}

fn rings(poly: &Polygon<f64>) -> impl Iterator<Item = &LineString<f64>> {
    std::iter::once(poly.exterior()).chain(poly.interiors())
}

/// Great-circle metres from `p` to the nearest point of the segment `a`–`b`.
///
/// The nearest point is located on a plane scaled by cos(latitude) around `p` (accurate for the
/// short edges of a home zone, and free of the NaN corner cases of spherical cross-track
/// formulas); the distance to it is then measured with Haversine.
fn segment_distance_m(p: Coord<f64>, a: Coord<f64>, b: Coord<f64>) -> f64 {
    let k = p.y.to_radians().cos();
    let (ax, ay) = ((a.x - p.x) * k, a.y - p.y);
    let (dx, dy) = ((b.x - a.x) * k, b.y - a.y);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let nearest = Point::new(a.x + t * (b.x - a.x), a.y + t * (b.y - a.y));
    Haversine.distance(Point(p), nearest)
}

fn circle_geometry(c: &Circle) -> Result<Geometry, String> {
    check_lat_lon(c.lat, c.lon, "the circle's centre")?;
    if !c.radius_m.is_finite() || !(MIN_RADIUS_M..=MAX_RADIUS_M).contains(&c.radius_m) {
        return Err(format!(
            "circle radius_m must be between {MIN_RADIUS_M} and {MAX_RADIUS_M} metres, got {}",
            c.radius_m
        ));
    }
    Ok(Geometry::Circle {
        center: Point::new(c.lon, c.lat),
        radius_m: c.radius_m,
    })
}

fn check_lat_lon(lat: f64, lon: f64, what: &str) -> Result<(), String> {
    if !(lat.is_finite() && lon.is_finite()) {
        return Err(format!("{what} must have finite coordinates"));
    }
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("{what} has latitude {lat}, outside -90..90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("{what} has longitude {lon}, outside -180..180"));
    }
    Ok(())
}

fn ring_name(i: usize) -> String {
    if i == 0 {
        "the outer ring".into()
    } else {
        format!("hole {i}")
    }
}

fn polygon_geometry(p: &GeoJsonPolygon) -> Result<Polygon<f64>, String> {
    if p.kind != "Polygon" {
        return Err(format!(
            "polygon \"type\" must be \"Polygon\", got {:?}",
            p.kind
        ));
    }
    if p.coordinates.is_empty() {
        return Err("polygon \"coordinates\" must hold at least the outer ring".into());
    }
    let total: usize = p.coordinates.iter().map(Vec::len).sum();
    if total > MAX_POSITIONS {
        return Err(format!(
            "a zone may have at most {MAX_POSITIONS} positions, got {total}"
        ));
    }
    let mut rings = Vec::with_capacity(p.coordinates.len());
    for (i, ring) in p.coordinates.iter().enumerate() {
        let name = ring_name(i);
        if ring.len() < 4 {
            return Err(format!(
                "{name} has {} positions; a closed ring needs at least 4 (the first repeated last)",
                ring.len()
            ));
        }
        let mut coords = Vec::with_capacity(ring.len());
        for (j, pos) in ring.iter().enumerate() {
            let (lon, lat) = match pos.as_slice() {
                [lon, lat] | [lon, lat, _] => (*lon, *lat),
                _ => {
                    return Err(format!(
                        "position {j} of {name} must be [longitude, latitude] with an optional altitude, got {} numbers",
                        pos.len()
                    ))
                }
            };
            if pos.iter().any(|v| !v.is_finite()) {
                return Err(format!(
                    "position {j} of {name} holds a number that is not finite"
                ));
            }
            check_lat_lon(lat, lon, &format!("position {j} of {name}"))?;
            coords.push(Coord { x: lon, y: lat });
        }
        if coords.first() != coords.last() {
            return Err(format!(
                "{name} is not closed: its last position must repeat its first"
            ));
        }
        rings.push(LineString::new(coords));
    }
    let mut rings = rings.into_iter();
    let exterior = rings.next().unwrap_or_else(|| LineString::new(Vec::new()));
    let outer = Polygon::new(exterior.clone(), Vec::new());
    // Area first: a flat ring also fails geo's validation, but with a less telling message.
    // A crossing ring can have zero signed area too, so flatness is judged on its positions.
    if is_flat(&exterior) || (outer.chamberlain_duquette_unsigned_area() < 1.0 && outer.is_valid())
    {
        return Err(
            "the outer ring encloses no area: its positions lie on one line or one point".into(),
        );
    }
    let poly = Polygon::new(exterior, rings.collect());
    if let Err(e) = poly.check_validation() {
        return Err(format!("the polygon is not valid: {e}"));
    }
    Ok(poly)
}

/// Whether every position of the ring lies on one line (or is one point).
fn is_flat(ring: &LineString<f64>) -> bool {
    let Some(&a) = ring.0.first() else {
        return true;
    };
    let Some(&b) = ring.0.iter().find(|c| **c != a) else {
        return true;
    };
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    ring.0
        .iter()
        .all(|c| ((c.x - a.x) * dy - (c.y - a.y) * dx).abs() <= 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shibuya-ish point; 0.001° of latitude is about 111 m.
    const LAT: f64 = 35.66;
    const LON: f64 = 139.70;

    fn square(half_deg: f64) -> Vec<Vec<f64>> {
        vec![
            vec![LON - half_deg, LAT - half_deg],
            vec![LON + half_deg, LAT - half_deg],
            vec![LON + half_deg, LAT + half_deg],
            vec![LON - half_deg, LAT + half_deg],
            vec![LON - half_deg, LAT - half_deg],
        ]
    }

    fn poly(rings: Vec<Vec<Vec<f64>>>) -> ZoneShape {
        ZoneShape::Polygon(GeoJsonPolygon {
            kind: "Polygon".into(),
            coordinates: rings,
        })
    }

    fn err(shape: ZoneShape) -> String {
        SafeZone::new(1, "z".into(), &shape)
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn circle_distance_is_metres_not_degrees() -> Result<(), String> {
        let z = SafeZone::new(
            1,
            "home".into(),
            &ZoneShape::Circle(Circle {
                lat: LAT,
                lon: LON,
                radius_m: 200.0,
            }),
        )?;
        assert!((z.signed_distance_m(LAT, LON) + 200.0).abs() < 1e-6);
        // 0.001° north ≈ 111.2 m.
        let d = z.signed_distance_m(LAT + 0.001, LON);
        assert!((d + 88.8).abs() < 0.5, "{d}");
        let d = z.signed_distance_m(LAT + 0.003, LON);
        assert!((d - 133.6).abs() < 0.5, "{d}");
        assert_eq!(z.max_depth_m(), 200.0);
        Ok(())
    }

    #[test]
    fn polygon_signs_and_holes() -> Result<(), String> {
        let z = SafeZone::new(
            2,
            "block".into(),
            &poly(vec![square(0.002), square(0.0005)]),
        )?;
        // Between hole and outer ring: inside, ~0.00075° from both.
        let d = z.signed_distance_m(LAT + 0.00125, LON);
        assert!(d < 0.0 && (d + 83.4).abs() < 1.0, "{d}");
        // In the hole: outside, nearest to the hole's east and west edges, 0.0005° of longitude away.
        let d = z.signed_distance_m(LAT, LON);
        let expect = 0.0005 * 111_195.0 * LAT.to_radians().cos();
        assert!((d - expect).abs() < 0.5, "{d} vs {expect}");
        // Outside the outer ring to the east: scaled by cos(lat).
        let d = z.signed_distance_m(LAT, LON + 0.003);
        let expect = 0.001 * 111_195.0 * LAT.to_radians().cos();
        assert!((d - expect).abs() < 1.0, "{d} vs {expect}");
        assert!(
            z.max_depth_m() > 60.0 && z.max_depth_m() < 90.0,
            "{}",
            z.max_depth_m()
        );
        assert_eq!(z.signed_distance_m(f64::NAN, LON), f64::INFINITY);
        Ok(())
    }

    #[test]
    fn accepts_an_altitude_as_third_number() {
        let mut ring = square(0.001);
        for p in &mut ring {
            p.push(12.0);
        }
        assert!(SafeZone::new(1, "z".into(), &poly(vec![ring])).is_ok());
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        let cases: Vec<(ZoneShape, &str)> = vec![
            (
                ZoneShape::Polygon(GeoJsonPolygon {
                    kind: "MultiPolygon".into(),
                    coordinates: vec![square(0.001)],
                }),
                "must be \"Polygon\"",
            ),
            (poly(vec![]), "outer ring"),
            (poly(vec![square(0.001)[..3].to_vec()]), "at least 4"),
            (poly(vec![square(0.001)[..4].to_vec()]), "not closed"),
            (
                poly(vec![{
                    let mut r = square(0.001);
                    r[1] = vec![LON];
                    r
                }]),
                "position 1 of the outer ring",
            ),
            (
                poly(vec![{
                    let mut r = square(0.001);
                    r[2][1] = 95.0;
                    r
                }]),
                "latitude 95",
            ),
            (
                poly(vec![{
                    let mut r = square(0.001);
                    r[2][0] = 181.0;
                    r
                }]),
                "longitude 181",
            ),
            (
                poly(vec![{
                    let mut r = square(0.001);
                    r[2][0] = f64::INFINITY;
                    r
                }]),
                "not finite",
            ),
            (
                poly(vec![vec![
                    vec![LON, LAT],
                    vec![LON + 0.001, LAT],
                    vec![LON + 0.002, LAT],
                    vec![LON, LAT],
                ]]),
                "no area",
            ),
            (
                // A bow tie crosses itself.
                poly(vec![vec![
                    vec![LON, LAT],
                    vec![LON + 0.001, LAT + 0.001],
                    vec![LON + 0.001, LAT],
                    vec![LON, LAT + 0.001],
                    vec![LON, LAT],
                ]]),
                "self-intersection",
            ),
            (
                poly(vec![square(0.001), {
                    square(0.001)
                        .into_iter()
                        .map(|p| vec![p[0] + 0.01, p[1]])
                        .collect()
                }]),
                "not contained",
            ),
            (
                ZoneShape::Circle(Circle {
                    lat: LAT,
                    lon: LON,
                    radius_m: 5.0,
                }),
                "between 10 and 50000",
            ),
            (
                ZoneShape::Circle(Circle {
                    lat: LAT,
                    lon: LON,
                    radius_m: f64::NAN,
                }),
                "radius_m",
            ),
            (
                ZoneShape::Circle(Circle {
                    lat: 91.0,
                    lon: LON,
                    radius_m: 100.0,
                }),
                "latitude 91",
            ),
            (
                ZoneShape::Circle(Circle {
                    lat: LAT,
                    lon: f64::NAN,
                    radius_m: 100.0,
                }),
                "finite",
            ),
        ];
        for (i, (shape, want)) in cases.into_iter().enumerate() {
            let got = err(shape);
            assert!(
                got.contains(want),
                "case {i}: {got:?} should mention {want:?}"
            );
        }
    }
}
