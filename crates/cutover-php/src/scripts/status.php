<?php
// Written by cutover to ask this php-fpm pool about OPcache; removed after the request.
header('Content-Type: application/json');
$keys = ['opcache.enable', 'opcache.validate_timestamps', 'opcache.revalidate_freq',
    'opcache.revalidate_path', 'opcache.preload', 'opcache.file_cache', 'opcache.restrict_api',
    'opcache.memory_consumption', 'opcache.interned_strings_buffer', 'opcache.max_accelerated_files', 'opcache.force_restart_timeout',
    'realpath_cache_size', 'realpath_cache_ttl', 'open_basedir'];
$ini = [];
foreach ($keys as $key) {
    $value = ini_get($key);
    $ini[$key] = $value === false ? null : $value;
}
$opcache = null;
$error = null;
if (!function_exists('opcache_get_status')) {
    $error = 'the OPcache extension is not loaded in this pool';
} else {
    $s = @opcache_get_status(false);
    if ($s === false) {
        $last = error_get_last();
        $error = $last ? $last['message'] : 'opcache_get_status() returned false';
    } else {
        $stats = $s['opcache_statistics'] ?? [];
        $memory = $s['memory_usage'] ?? [];
        $opcache = [
            'enabled' => (bool) ($s['opcache_enabled'] ?? false),
            'cache_full' => (bool) ($s['cache_full'] ?? false),
            'restart_pending' => (bool) ($s['restart_pending'] ?? false),
            'restart_in_progress' => (bool) ($s['restart_in_progress'] ?? false),
            'used_memory' => (int) ($memory['used_memory'] ?? 0),
            'free_memory' => (int) ($memory['free_memory'] ?? 0),
            'wasted_memory' => (int) ($memory['wasted_memory'] ?? 0),
            'cached_scripts' => (int) ($stats['num_cached_scripts'] ?? 0),
            'hits' => (int) ($stats['hits'] ?? 0),
            'misses' => (int) ($stats['misses'] ?? 0),
            'oom_restarts' => (int) ($stats['oom_restarts'] ?? 0),
            'manual_restarts' => (int) ($stats['manual_restarts'] ?? 0),
            'last_restart_time' => (int) ($stats['last_restart_time'] ?? 0),
        ];
    }
}
// The user the workers run as, for [deploy] writable_user. Not get_current_user(): that is
// the owner of this script file.
$user = null;
if (function_exists('posix_geteuid') && function_exists('posix_getpwuid')) {
    $pw = posix_getpwuid(posix_geteuid());
    $user = is_array($pw) ? $pw['name'] : null;
}
echo json_encode([
    'pid' => getmypid(),
    'php_version' => PHP_VERSION,
    'sapi' => PHP_SAPI,
    'ini' => $ini,
    'opcache' => $opcache,
    'opcache_error' => $error,
    'realpath_cache_used' => realpath_cache_size(),
    'user' => $user,
]);
