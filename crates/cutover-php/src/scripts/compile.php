<?php
// Written by cutover to compile a release's scripts into this pool's OPcache before the
// release goes live; removed afterwards. One request compiles for at most `slice_ms`, so
// a worker is never held long and live requests keep being served between slices.
header('Content-Type: application/json');
$started = microtime(true);
$job = json_decode(file_get_contents('php://input'), true);
if (!is_array($job) || !function_exists('opcache_compile_file')) {
    echo json_encode(['error' => is_array($job) ? 'the OPcache extension is not loaded in this pool' : 'no job']);
    return;
}
$root = (string) $job['root'];
$until = $started + ((int) $job['slice_ms']) / 1000;
$reserve = (int) $job['reserve'];
$done = 0; $compiled = 0; $cached = 0; $missing = 0; $failed = [];
$stopped = null;
$free = 0;
foreach ($job['files'] as [$relative, $expected]) {
    if ($done > 0 && microtime(true) >= $until) {
        break;
    }
    $s = opcache_get_status(false);
    $free = (int) ($s['memory_usage']['free_memory'] ?? 0);
    $stats = $s['opcache_statistics'] ?? [];
    if (($stats['num_cached_keys'] ?? 0) + 2 >= ($stats['max_cached_keys'] ?? PHP_INT_MAX)) {
        $stopped = 'keys';
        break;
    }
    // A script takes about what its copy in the live release takes.
    if ($free - (int) $expected < $reserve) {
        $stopped = 'memory';
        break;
    }
    $done++;
    $path = $root . $relative;
    if (opcache_is_script_cached($path)) {
        $cached++;
        continue;
    }
    if (!is_file($path)) {
        $missing++;
        continue;
    }
    try {
        $ok = @opcache_compile_file($path);
    } catch (\Throwable $e) {
        $ok = false;
    }
    if ($ok) {
        $compiled++;
    } else {
        $failed[] = $relative;
    }
}
$s = opcache_get_status(false);
echo json_encode([
    'error' => null,
    'done' => $done,
    'compiled' => $compiled,
    'cached' => $cached,
    'missing' => $missing,
    'failed' => $failed,
    'stopped' => $stopped,
    'free_memory' => (int) ($s['memory_usage']['free_memory'] ?? 0),
]);
