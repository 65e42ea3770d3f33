<?php
// Written by cutover to reset this php-fpm pool's OPcache; removed after the request.
header('Content-Type: application/json');
$reset = false;
$error = null;
if (!function_exists('opcache_reset')) {
    $error = 'the OPcache extension is not loaded in this pool';
} else {
    $reset = @opcache_reset();
    if (!$reset) {
        $last = error_get_last();
        $error = $last ? $last['message'] : 'opcache_reset() returned false: OPcache is disabled in this pool';
    }
}
echo json_encode(['pid' => getmypid(), 'reset' => $reset === true, 'error' => $error]);
