<?php
// Written by cutover to list what this pool's OPcache holds under one directory (the
// releases of a deploy path), or only OPcache's counters (CUTOVER_COUNTERS): those change
// whenever a script is compiled or invalidated, or OPcache restarts. Removed after the
// request.
header('Content-Type: application/json');
$root = $_SERVER['CUTOVER_ROOT'] ?? '';
$list = ($_SERVER['CUTOVER_COUNTERS'] ?? '') !== '1';
if (!function_exists('opcache_get_status')) {
    echo json_encode(['error' => 'the OPcache extension is not loaded in this pool']);
    return;
}
// Listing every script costs ~20 ms for 3,000 of them; the counters alone ~1 ms.
$s = @opcache_get_status($list);
if ($s === false) {
    $last = error_get_last();
    echo json_encode(['error' => $last ? $last['message'] : 'opcache_get_status() returned false']);
    return;
}
$scripts = [];
$cut = strlen($root);
foreach ($s['scripts'] ?? [] as $path => $info) {
    // Keys are the paths scripts were compiled under: real paths when the web server
    // passes $realpath_root, which is what a release's files are compiled as.
    $path = $info['full_path'] ?? $path;
    // Invalidated scripts stay listed until OPcache restarts; they are not cached.
    if ($cut > 0 && strncmp($path, $root, $cut) === 0 && opcache_is_script_cached($path)) {
        $scripts[] = [substr($path, $cut), (int) ($info['memory_consumption'] ?? 0), (int) ($info['hits'] ?? 0)];
    }
}
$memory = $s['memory_usage'] ?? [];
$stats = $s['opcache_statistics'] ?? [];
echo json_encode([
    'error' => null,
    'scripts' => $scripts,
    'used_memory' => (int) ($memory['used_memory'] ?? 0),
    'free_memory' => (int) ($memory['free_memory'] ?? 0),
    'wasted_memory' => (int) ($memory['wasted_memory'] ?? 0),
    'cached_scripts' => (int) ($stats['num_cached_scripts'] ?? 0),
    'cached_keys' => (int) ($stats['num_cached_keys'] ?? 0),
    'max_cached_keys' => (int) ($stats['max_cached_keys'] ?? 0),
    'cache_full' => (bool) ($s['cache_full'] ?? false),
    'oom_restarts' => (int) ($stats['oom_restarts'] ?? 0),
    'hash_restarts' => (int) ($stats['hash_restarts'] ?? 0),
    'manual_restarts' => (int) ($stats['manual_restarts'] ?? 0),
    'start_time' => (int) ($stats['start_time'] ?? 0),
    'last_restart_time' => (int) ($stats['last_restart_time'] ?? 0),
    'validate_timestamps' => (bool) ini_get('opcache.validate_timestamps'),
]);
