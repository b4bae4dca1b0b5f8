/* Module harvest-schedule-preview: under the Schedule field of the source
 * form, lists the next three runs of the cron expression being typed (action
 * harvest_schedule_preview), or says why the expression is not valid. The
 * list rendered with the page (the saved schedule) is what shows without
 * JavaScript.
 *
 *   <input data-module="harvest-schedule-preview" aria-describedby="schedule-preview">
 *   <div id="schedule-preview" data-label="Next runs ({timezone}):"></div>
 */
this.ckan.module('harvest-schedule-preview', function ($) {
  return {
    options: {
      delay: 400
    },

    initialize: function () {
      $.proxyAll(this, /_on/);
      this.target = $('#' + this.el.attr('aria-describedby'));
      this.el.on('input', this._onInput);
    },

    _onInput: function () {
      window.clearTimeout(this._timer);
      this._timer = window.setTimeout(this._onPause, this.options.delay);
    },

    _onPause: function () {
      var value = $.trim(this.el.val());
      var request = (this._request || 0) + 1;
      this._request = request;
      if (!value) {
        this.target.empty();
        return;
      }
      var module = this;
      $.ajax({
        url: this.sandbox.client.url('/api/3/action/harvest_schedule_preview'),
        data: {schedule: value},
        dataType: 'json'
      }).done(function (answer) {
        if (request === module._request) {
          module._show(answer.result);
        }
      }).fail(function (xhr) {
        if (request === module._request) {
          module._showError(xhr);
        }
      });
    },

    _show: function (result) {
      var list = $('<ul class="list-unstyled mb-0"></ul>');
      $.each(result.next_runs, function (index, time) {
        list.append($('<li></li>').text(time.slice(0, 16).replace('T', ' ')));
      });
      var label = String(this.target.data('label')).replace('{timezone}', result.timezone);
      this.target.removeClass('text-danger').empty().append(
        document.createTextNode(label), list);
    },

    _showError: function (xhr) {
      var error = xhr.responseJSON && xhr.responseJSON.error;
      var message = error && error.schedule ? error.schedule[0] : this._('Invalid schedule');
      this.target.addClass('text-danger').text(message);
    },

    teardown: function () {
      window.clearTimeout(this._timer);
    }
  };
});
