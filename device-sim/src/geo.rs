//! Metric geometry around a point: local east/north offsets in metres and back to latitude
//! and longitude. Neighbourhood distances are a few kilometres at most, so an equirectangular
//! projection is accurate to centimetres.

use mimamori_protocol::api::LatLon;
use rand::Rng;

/// Mean Earth radius in metres.
const EARTH_M: f64 = 6_371_008.8;

/// A position in metres east (`x`) and north (`y`) of a home.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Xy {
    pub x: f64,
    pub y: f64,
}

impl Xy {
    pub fn new(x: f64, y: f64) -> Xy {
        Xy { x, y }
    }

    pub fn norm(self) -> f64 {
        self.x.hypot(self.y)
    }

    pub fn dist(self, o: Xy) -> f64 {
        (self.x - o.x).hypot(self.y - o.y)
    }

    /// The point `f` of the way from `self` to `o`.
    pub fn lerp(self, o: Xy, f: f64) -> Xy {
        Xy::new(self.x + (o.x - self.x) * f, self.y + (o.y - self.y) * f)
    }

    /// A point `r` metres away in direction `angle` (radians, counter-clockwise from east).
    pub fn polar(r: f64, angle: f64) -> Xy {
        Xy::new(r * angle.cos(), r * angle.sin())
    }
}

/// The point `offset` metres east and north of `origin`.
pub fn offset(origin: LatLon, offset: Xy) -> LatLon {
    let lat = origin.lat + (offset.y / EARTH_M).to_degrees();
    let lon = origin.lon + (offset.x / (EARTH_M * origin.lat.to_radians().cos())).to_degrees();
    LatLon { lat, lon }
}

/// Where `p` lies east and north of `origin`, in metres.
pub fn local(origin: LatLon, p: LatLon) -> Xy {
    let y = (p.lat - origin.lat).to_radians() * EARTH_M;
    let x = (p.lon - origin.lon).to_radians() * EARTH_M * origin.lat.to_radians().cos();
    Xy::new(x, y)
}

/// A standard normal sample (Box–Muller); rand 0.8 has no normal distribution of its own.
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential sample with the given mean: the gap between independent random events.
pub fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_local_are_inverse_at_neighbourhood_scale() {
        let home = LatLon {
            lat: 35.7074,
            lon: 139.6638,
        };
        let p = offset(home, Xy::new(1200.0, -800.0));
        let back = local(home, p);
        assert!((back.x - 1200.0).abs() < 0.01 && (back.y + 800.0).abs() < 0.01);
        // One degree of latitude is about 111 km.
        let north = offset(home, Xy::new(0.0, 111_195.0));
        assert!((north.lat - home.lat - 1.0).abs() < 1e-3);
    }
}
