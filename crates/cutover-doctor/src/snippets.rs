//! The recommended configuration for a deploy path, commented: what `cutover config
//! nginx|apache|fpm` prints. Every choice here is the absence of a hazard `check` knows.

use std::path::Path;

/// How a FastCGI address is written for nginx (`unix:/x.sock`, `127.0.0.1:9000`) and for
/// php-fpm's `listen` (`/x.sock`, `127.0.0.1:9000`).
fn forms(address: &str) -> (String, String) {
    let path = address.strip_prefix("unix:").unwrap_or(address);
    if path.starts_with('/') {
        (format!("unix:{path}"), path.to_string())
    } else {
        (address.to_string(), address.to_string())
    }
}

pub const DEFAULT_FPM: &str = "unix:/run/php/php8.2-fpm.sock";

/// An nginx `server` whose root is `<deploy>/current/<web_dir>`.
pub fn nginx(deploy: &Path, web_dir: &str, fpm: &str) -> String {
    let root = deploy.join("current").join(web_dir);
    let (pass, _) = forms(fpm);
    let deploy = deploy.display();
    let root = root.display();
    format!(
        r#"# nginx for the deploy path {deploy}, as `cutover config nginx` recommends it.
# Put it in /etc/nginx/sites-available/ (inside `http {{}}`), then `nginx -t && nginx -s reload`.
server {{
    listen 80;
    server_name example.com;

    # Through the `current` symlink; PHP is given the resolved path below.
    root {root};
    index index.php index.html;

    # open_file_cache keeps files and lookups by path for open_file_cache_valid: after a
    # switch nginx would go on serving the old release's static files. Off (nginx's default).
    open_file_cache off;
    # disable_symlinks would refuse the `current` link itself; if you need it, use
    # `disable_symlinks if_not_owner from=$document_root;` (checks only below the root).

    location / {{
        try_files $uri $uri/ /index.php$is_args$args;
    }}

    location ~ [^/]\.php(/|$) {{
        fastcgi_split_path_info ^(.+?\.php)(/.*)$;
        try_files $fastcgi_script_name =404;
        include fastcgi_params;
        # $realpath_root is resolved on every request: PHP sees releases/<id>/…, so OPcache
        # and the realpath cache never map `current` to an old release. These two lines
        # come after the include, which sets DOCUMENT_ROOT to $document_root (the last
        # value of a parameter wins).
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_pass {pass};
    }}
}}
# cutover.toml:
#   [php]
#   fpm = "{fpm}"
#   [refresh]
#   strategy = ["opcache-reset"]   # keeps OPcache from filling up with old releases
"#
    )
}

/// A php-fpm `[global]` section and pool listening on `fpm`.
pub fn fpm(deploy: &Path, fpm: &str) -> String {
    let (_, listen) = forms(fpm);
    let (_, shown) = forms(fpm);
    let unix = shown.starts_with('/');
    let socket_owner = if unix {
        "listen.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\n"
    } else {
        "listen.allowed_clients = 127.0.0.1\n"
    };
    let scripts = deploy.join(".cutover/php");
    let deploy = deploy.display();
    let scripts = scripts.display();
    format!(
        r#"; php-fpm for the deploy path {deploy}, as `cutover config fpm` recommends it.
; [global] belongs in php-fpm.conf, the pool in pool.d/ (Debian: /etc/php/8.2/fpm/);
; php-fpm reads them as one text, so this also works as a whole file.

[global]
; On a reload (SIGUSR2: [refresh] strategy "fpm-reload") workers may finish the request
; they serve for this long. php-fpm's default, 0, kills them at once: 502s.
process_control_timeout = 10s

[app]
user = www-data
group = www-data
listen = {listen}
{socket_owner}pm = dynamic
pm.max_children = 16
pm.start_servers = 4
pm.min_spare_servers = 2
pm.max_spare_servers = 6
pm.max_requests = 1000

; Compile each release once and never look at its files again: cutover empties OPcache
; after every switch (cutover.toml: [refresh] strategy = ["opcache-reset"], [php] fpm =
; "{fpm}").
php_admin_value[opcache.validate_timestamps] = 0

; Left unset on purpose:
;   open_basedir          turns the realpath cache off, and scripts that reset OPcache
;                         must be inside it ({scripts})
;   opcache.preload       survives opcache_reset(): every deploy would need a full restart
;   opcache.file_cache    survives opcache_reset() and restarts: old code comes back
;   opcache.restrict_api  must admit {scripts} if set
; OPcache's memory is one segment for the whole master, so it is set in php.ini, not per
; pool (Debian: /etc/php/8.2/fpm/conf.d/10-opcache.ini) — room for two releases:
;   opcache.enable = 1
;   opcache.memory_consumption = 256
;   opcache.interned_strings_buffer = 16
;   opcache.max_accelerated_files = 20000
"#
    )
}

/// An Apache virtual host with PHP as mod_php (prefork), and the php-fpm alternative.
pub fn apache(deploy: &Path, web_dir: &str, fpm: &str) -> String {
    let root = deploy.join("current").join(web_dir);
    let (pass, listen) = forms(fpm);
    let proxy = if pass.starts_with("unix:") {
        format!("proxy:unix:{listen}|fcgi://localhost")
    } else {
        format!("proxy:fcgi://{listen}")
    };
    let deploy = deploy.display();
    let root = root.display();
    format!(
        r#"# Apache for the deploy path {deploy}, as `cutover config apache` recommends it.
# PHP as mod_php needs the prefork MPM (Debian's PHP is not thread-safe; Apache refuses to
# start it under event or worker):
#   a2dismod mpm_event && a2enmod mpm_prefork php8.2
# mod_php keeps its OPcache in Apache: a graceful restart after each switch renews it, and
# cutover waits until no child from before the restart is left.
#   cutover.toml: [refresh] strategy = ["apache-graceful"]
<VirtualHost *:80>
    ServerName example.com
    # Through the `current` symlink; Apache does not resolve it for PHP.
    DocumentRoot "{root}"
    <Directory "{root}">
        Require all granted
    </Directory>
    DirectoryIndex index.php index.html
    # Compile each release once; the graceful restart starts a fresh cache.
    php_admin_value opcache.validate_timestamps 0
</VirtualHost>

# With PHP in php-fpm instead (mpm_event + proxy_fcgi): Apache has no $realpath_root, so
# PHP gets paths through `current` and the pool must be reset after each switch:
#   cutover.toml: [php] fpm = "{fpm}"  and  [refresh] strategy = ["opcache-reset"]
# <FilesMatch "\.php$">
#     SetHandler "{proxy}"
# </FilesMatch>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_both_forms() {
        assert_eq!(
            forms("unix:/a.sock"),
            ("unix:/a.sock".into(), "/a.sock".into())
        );
        assert_eq!(forms("/a.sock"), ("unix:/a.sock".into(), "/a.sock".into()));
        assert_eq!(
            forms("127.0.0.1:9000"),
            ("127.0.0.1:9000".into(), "127.0.0.1:9000".into())
        );
    }

    #[test]
    fn the_nginx_snippet_has_no_hazard() {
        let text = nginx(Path::new("/srv/app"), "public", DEFAULT_FPM);
        // As nginx -T would show it, inside http {} with Debian's fastcgi_params.
        let dump = format!(
            "# configuration file /etc/nginx/nginx.conf:\nhttp {{\n{text}\n}}\n\n# configuration file /etc/nginx/fastcgi_params:\nfastcgi_param DOCUMENT_ROOT $document_root;\n"
        );
        let facts = crate::Facts {
            deploy_path: Some("/srv/app".into()),
            strategies: vec![cutover_config::RefreshStrategy::OpcacheReset],
            nginx: Some(crate::nginx::NginxConfig::from_dump(&dump).unwrap()),
            ..crate::Facts::default()
        };
        assert_eq!(crate::check(&facts), []);
        // And with no refresh at all, the paths are still resolved.
        let facts = crate::Facts {
            strategies: vec![],
            ..facts
        };
        assert_eq!(crate::check(&facts), []);
    }
}
