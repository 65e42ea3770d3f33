<?php
// Written by cutover to drop scripts of releases no request runs any more from this
// pool's OPcache; removed after the request. Invalidated scripts count as wasted memory,
// which OPcache reclaims only by a restart (see the README's "OPcache memory").
header('Content-Type: application/json');
$job = json_decode(file_get_contents('php://input'), true);
if (!is_array($job) || !function_exists('opcache_invalidate')) {
    echo json_encode(['error' => is_array($job) ? 'the OPcache extension is not loaded in this pool' : 'no job']);
    return;
}
$root = (string) $job['root'];
$invalidated = 0;
foreach ($job['files'] as $relative) {
    if (@opcache_invalidate($root . $relative, true)) {
        $invalidated++;
    }
}
echo json_encode(['error' => null, 'invalidated' => $invalidated]);
