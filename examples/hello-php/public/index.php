<?php

declare(strict_types=1);

// Include through __DIR__, never through a path spelled via `current`. PHP gives
// __DIR__ as the resolved path of this release (releases/<id>/public), so every file this
// request includes comes from the same release even if `current` is switched mid-request
// or a worker's realpath cache still maps `current` to the previous release.
require __DIR__ . '/../lib/greeting.php';

// cutover writes the release id to RELEASE at the release root.
$releaseFile = __DIR__ . '/../RELEASE';
$release = is_readable($releaseFile) ? trim((string) file_get_contents($releaseFile)) : '';
if ($release === '') {
    $release = 'unknown';
}

header('Content-Type: text/html; charset=utf-8');
header('X-Release: ' . $release);
$text = htmlspecialchars(hello_greeting($release), ENT_QUOTES);
?>
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>hello-php</title>
  <link rel="stylesheet" href="/css/app.css">
</head>
<body>
  <h1><?= $text ?></h1>
  <p>Served by <code><?= htmlspecialchars(__FILE__, ENT_QUOTES) ?></code></p>
</body>
</html>
