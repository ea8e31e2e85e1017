// Site settings of the dashboard. Edit this file to change them for everyone; it is
// the only place the tile source comes from (set `url: ''` for a map without tiles).
// Presets (docs/dashboard.md, "Map tiles"): keep one `tiles` block.

export default {
  tiles: {
    // OpenStreetMap's standard tiles (please respect their tile usage policy).
    url: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png',
    attribution: '&copy; OpenStreetMap contributors',
    maxZoom: 19,
    // The Geospatial Information Authority of Japan's standard map (地理院タイル):
    // url: 'https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png', attribution: '地理院タイル', maxZoom: 18,
    // The same, pale (markers stand out more):
    // url: 'https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png', attribution: '地理院タイル', maxZoom: 18,
    // Offline: a tile folder the hub serves itself (hub --tiles-dir FOLDER):
    // url: '/tiles/{z}/{x}/{y}.png', attribution: '&copy; OpenStreetMap contributors', maxZoom: 17,
  },
  // Where the map opens before any resident has a position (Tokyo).
  center: [35.6895, 139.6917],
  zoom: 13,
};
