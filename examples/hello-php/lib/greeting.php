<?php

declare(strict_types=1);

function hello_greeting(string $release): string
{
    return sprintf('Hello from release %s.', $release);
}
